//! The container spec hash stored in `io.kubernetes.container.hash`: a container whose spec
//! hash differs from the running one's is restarted. It must be stable across rkubelet
//! restarts and versions for an unchanged spec, so it hashes a canonical JSON form.

use k8s_openapi::api::core::v1::Container;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// 32-bit FNV-1a (the hash family upstream uses for container hashes).
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(FNV_OFFSET, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(FNV_PRIME)
    })
}

/// Hash of a container spec. The JSON form of k8s-openapi types has a fixed field order and
/// omits unset fields, so equal specs hash equally.
pub fn hash_container(container: &Container) -> u32 {
    match serde_json::to_vec(container) {
        Ok(json) => fnv1a_32(&json),
        // Serialising plain data cannot fail; fall back to the name so the hash stays stable.
        Err(_) => fnv1a_32(container.name.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn hash_changes_with_spec_only() {
        let a = Container {
            name: "app".into(),
            image: Some("busybox:1".into()),
            ..Default::default()
        };
        let mut b = a.clone();
        assert_eq!(hash_container(&a), hash_container(&b));
        b.image = Some("busybox:2".into());
        assert_ne!(hash_container(&a), hash_container(&b));
    }
}
