//! The checkpoint's checksum as upstream computes it, so either kubelet accepts the other's
//! file: FNV-1a (32 bits) over the text go-spew prints for the data with `%#v`, sorted map
//! keys and methods off. That text names each struct field's Go type in parentheses,
//! prints strings bare and byte slices as decimal numbers, writes nil as `<nil>`, and
//! separates elements with single spaces:
//!
//! ```text
//! (checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)[{PodUID:(string)u
//!  ContainerName:(string)c ResourceName:(string)r DeviceIDs:(checkpoint.DevicesPerNUMA)map[-1:[d]]
//!  AllocResp:([]uint8)[10 31]}] RegisteredDevices:(map[string][]string)map[r:[d]]}
//! ```
//! (one line; wrapped here). Entries and device IDs are hashed in the order the file holds
//! them; map keys in numeric (NUMA nodes) or byte (resources) order, which the `BTreeMap`s
//! keep.

use std::fmt::Write;

use super::checkpoint::Data;

/// FNV-1a, 32 bits.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// `[a b c]`: strings bare, space-separated.
fn strings(out: &mut String, items: &[String]) {
    out.push('[');
    out.push_str(&items.join(" "));
    out.push(']');
}

/// The text upstream hashes.
pub(super) fn spew_text(data: &Data) -> String {
    let mut out =
        String::from("(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)");
    match &data.pod_device_entries {
        None => out.push_str("<nil>"),
        Some(entries) => {
            out.push('[');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(
                    out,
                    "{{PodUID:(string){} ContainerName:(string){} ResourceName:(string){} DeviceIDs:(checkpoint.DevicesPerNUMA)",
                    e.pod_uid, e.container_name, e.resource_name
                );
                match &e.device_ids {
                    None => out.push_str("<nil>"),
                    Some(by_numa) => {
                        out.push_str("map[");
                        for (j, (node, ids)) in by_numa.iter().enumerate() {
                            if j > 0 {
                                out.push(' ');
                            }
                            let _ = write!(out, "{node}:");
                            strings(&mut out, ids);
                        }
                        out.push(']');
                    }
                }
                out.push_str(" AllocResp:([]uint8)");
                match &e.alloc_resp {
                    None => out.push_str("<nil>"),
                    Some(bytes) => {
                        out.push('[');
                        for (j, b) in bytes.iter().enumerate() {
                            if j > 0 {
                                out.push(' ');
                            }
                            let _ = write!(out, "{b}");
                        }
                        out.push(']');
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push_str(" RegisteredDevices:(map[string][]string)");
    match &data.registered_devices {
        None => out.push_str("<nil>"),
        Some(by_resource) => {
            out.push_str("map[");
            for (i, (resource, ids)) in by_resource.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{resource}:");
                strings(&mut out, ids);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// The checksum of `data`.
pub(super) fn checksum(data: &Data) -> u64 {
    u64::from(fnv1a32(spew_text(data).as_bytes()))
}
