//! AFL++ target `pod_to_cri`: see `rkubelet_fuzz::pod_to_cri`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::pod_to_cri(data);
    });
}
