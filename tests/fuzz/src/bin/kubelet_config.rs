//! AFL++ target `kubelet_config`: see `rkubelet_fuzz::kubelet_config`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::kubelet_config(data);
    });
}
