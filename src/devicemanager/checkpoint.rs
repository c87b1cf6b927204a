//! The device manager's checkpoint, `<root-dir>/device-plugins/kubelet_internal_checkpoint`
//! (upstream `devicemanager/checkpoint`): which devices each container holds with the
//! plugin's `Allocate` answer, and the healthy devices of each registered resource. The JSON
//! has upstream's shape, so either kubelet reads what the other wrote:
//!
//! ```json
//! {"Data":{"PodDeviceEntries":[{"PodUID":"…","ContainerName":"app","ResourceName":"example.com/dev",
//!   "DeviceIDs":{"-1":["dev-1"]},"AllocResp":"<base64 AllocateResponse>"}],
//!   "RegisteredDevices":{"example.com/dev":["dev-1","dev-2"]}},"Checksum":1234}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file's name in the device-plugins directory.
pub const FILE_NAME: &str = "kubelet_internal_checkpoint";

/// One container's devices of one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDevicesEntry {
    /// The pod's UID.
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    /// The container's name.
    #[serde(rename = "ContainerName")]
    pub container_name: String,
    /// The extended resource.
    #[serde(rename = "ResourceName")]
    pub resource_name: String,
    /// Device IDs by NUMA node (`-1`: the device reported no topology).
    #[serde(rename = "DeviceIDs")]
    pub device_ids: Option<BTreeMap<i64, Vec<String>>>,
    /// The plugin's `ContainerAllocateResponse`, protobuf-encoded, base64 in the JSON.
    #[serde(rename = "AllocResp", with = "base64_bytes")]
    pub alloc_resp: Option<Vec<u8>>,
}

/// What the checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// Every allocation (`null` when there is none, as Go writes a nil slice).
    #[serde(rename = "PodDeviceEntries")]
    pub pod_device_entries: Option<Vec<PodDevicesEntry>>,
    /// Healthy device IDs by resource.
    #[serde(rename = "RegisteredDevices")]
    pub registered_devices: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    #[serde(rename = "Data")]
    data: Data,
    #[serde(rename = "Checksum")]
    checksum: u64,
}

/// Why the checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The checkpoint file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// The file is not the checkpoint's JSON.
    #[error("{path}: not a device manager checkpoint: {why}")]
    Malformed {
        /// The checkpoint file.
        path: String,
        /// What the decoder said.
        why: String,
    },
    /// The checksum does not match the data.
    #[error("{path}: checkpoint is corrupted: checksum {found} does not match {expected}")]
    Corrupted {
        /// The checkpoint file.
        path: String,
        /// The checksum in the file.
        found: u64,
        /// The checksum of the data read.
        expected: u64,
    },
}

/// Reads the checkpoint at `path`; `Ok(None)` when there is none.
pub fn read(path: &Path) -> Result<Option<Data>, CheckpointError> {
    let shown = || path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: shown(),
                source,
            })
        }
    };
    let file: File = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Malformed {
        path: shown(),
        why: e.to_string(),
    })?;
    let expected = super::checksum::checksum(&file.data);
    if file.checksum != expected {
        return Err(CheckpointError::Corrupted {
            path: shown(),
            found: file.checksum,
            expected,
        });
    }
    Ok(Some(file.data))
}

/// Writes `data` to `path` with its checksum, through a rename.
pub fn write(path: &Path, data: &Data) -> Result<(), CheckpointError> {
    let file = File {
        checksum: super::checksum::checksum(data),
        data: data.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(|e| CheckpointError::Malformed {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    crate::util::write_private(path, &bytes).map_err(|source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `[]byte` as Go's JSON encoder writes it: standard base64, `null` for nil (kept apart
/// from empty, as the checksum tells them apart).
mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&crate::util::base64::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| crate::util::base64::decode(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
