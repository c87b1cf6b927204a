//! AFL++ target `values`: see `rkubelet_fuzz::values`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::values(data);
    });
}
