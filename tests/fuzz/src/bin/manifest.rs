//! AFL++ target `manifest`: see `rkubelet_fuzz::manifest`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::manifest(data);
    });
}
