//! AFL++ target `kubeconfig`: see `rkubelet_fuzz::kubeconfig`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::kubeconfig(data);
    });
}
