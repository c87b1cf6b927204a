//! AFL++ target `watch_stream`: see `rkubelet_fuzz::watch_stream`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::watch_stream(data);
    });
}
