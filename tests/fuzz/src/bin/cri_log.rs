//! AFL++ target `cri_log`: see `rkubelet_fuzz::cri_log`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rkubelet_fuzz::cri_log(data);
    });
}
