//! AFL++ target `http_request`: see `rkubelet_fuzz::http_request`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::http_request(data);
    });
}
