//! Brief listings: `ListPodSandbox` and `ListContainers` responses decoded for what the
//! PLEG's relist reads, once a second, of every sandbox and container on the node.
//!
//! A full decode builds two hash maps per object (labels and annotations: the pod's own
//! labels and annotations among them) only to drop them a moment later; on a node with a
//! hundred pods that was half of the kubelet's CPU at rest. The decoder here walks the
//! protobuf wire format of the response itself and keeps each object's id, sandbox id,
//! metadata, state, creation time and the labels named by the caller; annotations, images
//! and every other label are skipped without being copied. Field numbers are CRI v1's
//! (`proto/api.proto`).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use protobuf::ProtobufEnum;

use super::api;

/// Why a response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

type Result<T> = std::result::Result<T, DecodeError>;

fn err<T>(what: impl Into<String>) -> Result<T> {
    Err(DecodeError(what.into()))
}

/// One field of a message on the wire.
enum Value<'a> {
    Varint(u64),
    /// A length-delimited field: a string, bytes, an embedded message or a map entry.
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit field (CRI's listings have none; skipped).
    Fixed,
}

/// A reader over one message's bytes.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { rest: bytes }
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        err("truncated or overlong varint")
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8]> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > self.rest.len() {
            return err(format!(
                "field of {len} bytes with {} left in the message",
                self.rest.len()
            ));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    /// The next field's number and value; `None` at the end of the message.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 {
            return err("field number 0");
        }
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return err(format!("wire type {other} of field {number}")),
        };
        Ok(Some((number, value)))
    }
}

fn string(bytes: &[u8], field: &str) -> Result<String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => err(format!("{field} is not UTF-8")),
    }
}

fn bytes<'a>(value: Value<'a>, field: &str) -> Result<&'a [u8]> {
    match value {
        Value::Bytes(b) => Ok(b),
        _ => err(format!("{field} is not length-delimited")),
    }
}

fn varint(value: Value<'_>, field: &str) -> Result<u64> {
    match value {
        Value::Varint(v) => Ok(v),
        _ => err(format!("{field} is not a varint")),
    }
}

/// A map entry (`key = 1`, `value = 2`) kept when its key is one of `keep`.
fn keep_entry(entry: &[u8], keep: &[&str], into: &mut HashMap<String, String>) -> Result<()> {
    let mut key: &[u8] = &[];
    let mut value: &[u8] = &[];
    let mut fields = Fields::new(entry);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => key = bytes(v, "label key")?,
            2 => value = bytes(v, "label value")?,
            _ => {}
        }
    }
    if keep.iter().any(|k| k.as_bytes() == key) {
        into.insert(string(key, "label key")?, string(value, "label value")?);
    }
    Ok(())
}

/// An enum value on the wire as an `i32`, as protobuf reads it (a negative value is sent
/// as ten bytes).
fn enum_value(v: u64) -> i32 {
    v as i32
}

fn container_metadata(bytes: &[u8]) -> Result<api::ContainerMetadata> {
    let mut m = api::ContainerMetadata::new();
    let mut fields = Fields::new(bytes);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => m.name = string(self::bytes(v, "metadata.name")?, "metadata.name")?,
            2 => m.attempt = varint(v, "metadata.attempt")? as u32,
            _ => {}
        }
    }
    Ok(m)
}

fn sandbox_metadata(bytes: &[u8]) -> Result<api::PodSandboxMetadata> {
    let mut m = api::PodSandboxMetadata::new();
    let mut fields = Fields::new(bytes);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => m.name = string(self::bytes(v, "metadata.name")?, "metadata.name")?,
            2 => m.uid = string(self::bytes(v, "metadata.uid")?, "metadata.uid")?,
            3 => m.namespace = string(self::bytes(v, "metadata.namespace")?, "metadata.namespace")?,
            4 => m.attempt = varint(v, "metadata.attempt")? as u32,
            _ => {}
        }
    }
    Ok(m)
}

/// One `Container`: id (1), sandbox id (2), metadata (3), state (6), created_at (7) and
/// the labels (8) in `keep`. A state this version of CRI does not know reads as
/// `CONTAINER_UNKNOWN`.
fn container(bytes: &[u8], keep: &[&str]) -> Result<api::Container> {
    let mut c = api::Container::new();
    let mut fields = Fields::new(bytes);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => c.id = string(self::bytes(v, "id")?, "id")?,
            2 => c.pod_sandbox_id = string(self::bytes(v, "pod_sandbox_id")?, "pod_sandbox_id")?,
            3 => c.set_metadata(container_metadata(self::bytes(v, "metadata")?)?),
            6 => {
                c.state = api::ContainerState::from_i32(enum_value(varint(v, "state")?))
                    .unwrap_or(api::ContainerState::CONTAINER_UNKNOWN)
            }
            7 => c.created_at = varint(v, "created_at")? as i64,
            8 => keep_entry(self::bytes(v, "labels")?, keep, &mut c.labels)?,
            _ => {}
        }
    }
    Ok(c)
}

/// One `PodSandbox`: id (1), metadata (2), state (3), created_at (4) and the labels (5) in
/// `keep`. A state this version of CRI does not know reads as `SANDBOX_NOTREADY`.
fn sandbox(bytes: &[u8], keep: &[&str]) -> Result<api::PodSandbox> {
    let mut s = api::PodSandbox::new();
    let mut fields = Fields::new(bytes);
    while let Some((number, v)) = fields.next_field()? {
        match number {
            1 => s.id = string(self::bytes(v, "id")?, "id")?,
            2 => s.set_metadata(sandbox_metadata(self::bytes(v, "metadata")?)?),
            3 => {
                s.state = api::PodSandboxState::from_i32(enum_value(varint(v, "state")?))
                    .unwrap_or(api::PodSandboxState::SANDBOX_NOTREADY)
            }
            4 => s.created_at = varint(v, "created_at")? as i64,
            5 => keep_entry(self::bytes(v, "labels")?, keep, &mut s.labels)?,
            _ => {}
        }
    }
    Ok(s)
}

/// The containers (field 1) of a `ListContainersResponse`.
pub fn containers(response: &[u8], keep: &[&str]) -> Result<Vec<api::Container>> {
    let mut out = Vec::new();
    let mut fields = Fields::new(response);
    while let Some((number, v)) = fields.next_field()? {
        if number == 1 {
            out.push(container(bytes(v, "containers")?, keep)?);
        }
    }
    Ok(out)
}

/// The sandboxes (field 1, `items`) of a `ListPodSandboxResponse`.
pub fn sandboxes(response: &[u8], keep: &[&str]) -> Result<Vec<api::PodSandbox>> {
    let mut out = Vec::new();
    let mut fields = Fields::new(response);
    while let Some((number, v)) = fields.next_field()? {
        if number == 1 {
            out.push(sandbox(bytes(v, "items")?, keep)?);
        }
    }
    Ok(out)
}

/// The objects of one listing response: per id, its state, its encoded size and its place
/// in the listing.
#[derive(Debug, Default)]
pub struct Seen {
    objects: HashMap<String, (u64, usize, usize)>,
}

/// An object of a listing response: its id (field 1), its state (field `state`, 0 when
/// absent) and its encoded size.
fn identify(object: &[u8], state: u64) -> Result<(&str, u64, usize)> {
    let (mut id, mut value) = (&[][..], 0);
    let mut fields = Fields::new(object);
    while let Some((number, v)) = fields.next_field()? {
        if number == 1 {
            id = bytes(v, "id")?;
        } else if number == state {
            value = varint(v, "state")?;
        }
    }
    match std::str::from_utf8(id) {
        Ok(id) => Ok((id, value, object.len())),
        Err(_) => err("id is not UTF-8"),
    }
}

/// The field number of the state in a `PodSandbox`.
pub const SANDBOX_STATE_FIELD: u64 = 3;
/// The field number of the state in a `Container`.
pub const CONTAINER_STATE_FIELD: u64 = 6;

impl Seen {
    /// What `response` (field 1: the objects) lists, with states in field `state`.
    pub fn of(response: &[u8], state: u64) -> Result<Seen> {
        let mut objects = HashMap::new();
        let mut fields = Fields::new(response);
        while let Some((number, v)) = fields.next_field()? {
            if number == 1 {
                let (id, value, size) = identify(bytes(v, "object")?, state)?;
                let place = objects.len();
                objects.insert(id.to_string(), (value, size, place));
            }
        }
        Ok(Seen { objects })
    }

    /// Whether `response` lists exactly these objects, each in the same state and of the same
    /// encoded size. CRI fixes everything else a listing shows of a sandbox or a container
    /// (sandbox, metadata, image, labels, annotations, creation time) when it is made, so
    /// the same ids and states are the same listing; the size is checked besides. Nothing is
    /// copied: a node at rest relists this way once a second.
    pub fn matches(&self, response: &[u8], state: u64) -> Result<bool> {
        let mut listed = vec![false; self.objects.len()];
        let mut fields = Fields::new(response);
        while let Some((number, v)) = fields.next_field()? {
            if number != 1 {
                continue;
            }
            let (id, value, size) = identify(bytes(v, "object")?, state)?;
            match self.objects.get(id) {
                Some(&(v, s, place)) if v == value && s == size && !listed[place] => {
                    listed[place] = true;
                }
                _ => return Ok(false),
            }
        }
        Ok(listed.iter().all(|&l| l))
    }
}

/// The last brief listing of one kind, handed out again while nothing changes.
pub struct LastListing<T> {
    keep: Vec<String>,
    seen: Seen,
    listing: Arc<Vec<T>>,
}

/// The decoder of one kind of listing: [`containers`] or [`sandboxes`].
pub type Decode<T> = fn(&[u8], &[&str]) -> Result<Vec<T>>;

/// The brief listing in `response` (states in field `state`): the last one again, the very
/// same `Arc`, when the runtime lists the same objects in the same states ([`Seen::matches`])
/// and the same labels are kept; otherwise decoded with `decode` and kept in `last`.
pub fn listing<T>(
    last: &mut Option<LastListing<T>>,
    response: &[u8],
    keep: &[&str],
    state: u64,
    decode: Decode<T>,
) -> Result<Arc<Vec<T>>> {
    if let Some(l) = last.as_ref() {
        let same_labels = l.keep.iter().map(String::as_str).eq(keep.iter().copied());
        if same_labels && l.seen.matches(response, state)? {
            return Ok(Arc::clone(&l.listing));
        }
    }
    let listing = Arc::new(decode(response, keep)?);
    *last = Some(LastListing {
        keep: keep.iter().map(|k| k.to_string()).collect(),
        seen: Seen::of(response, state)?,
        listing: Arc::clone(&listing),
    });
    Ok(listing)
}

/// Reads a whole response of `size` bytes from `reader` (grpcio's `MessageReader`).
pub fn read_all(mut reader: impl Read, size: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size);
    match reader.read_to_end(&mut buf) {
        Ok(_) => Ok(buf),
        Err(e) => err(format!("reading the response: {e}")),
    }
}

/// What a brief listing keeps of a full one: the same objects with only the fields above
/// and the labels in `keep`. The fake runtime and the tests' reference.
pub fn brief_container(full: &api::Container, keep: &[&str]) -> api::Container {
    let mut c = api::Container::new();
    c.id = full.id.clone();
    c.pod_sandbox_id = full.pod_sandbox_id.clone();
    if let Some(m) = full.metadata.as_ref() {
        c.set_metadata(m.clone());
    }
    c.state = full.state;
    c.created_at = full.created_at;
    c.labels = kept_labels(&full.labels, keep);
    c
}

/// See [`brief_container`].
pub fn brief_sandbox(full: &api::PodSandbox, keep: &[&str]) -> api::PodSandbox {
    let mut s = api::PodSandbox::new();
    s.id = full.id.clone();
    if let Some(m) = full.metadata.as_ref() {
        s.set_metadata(m.clone());
    }
    s.state = full.state;
    s.created_at = full.created_at;
    s.labels = kept_labels(&full.labels, keep);
    s
}

/// The labels among `labels` named in `keep`.
pub fn kept_labels(labels: &HashMap<String, String>, keep: &[&str]) -> HashMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;

    const KEEP: &[&str] = &["io.kubernetes.pod.uid", "io.kubernetes.container.name"];

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full_container(i: usize) -> api::Container {
        let mut c = api::Container::new();
        c.id = format!("c{i}");
        c.pod_sandbox_id = format!("s{i}");
        let mut m = api::ContainerMetadata::new();
        m.name = format!("app-é{i}");
        m.attempt = i as u32;
        c.set_metadata(m);
        let mut image = api::ImageSpec::new();
        image.image = "docker.io/library/busybox:local".into();
        c.set_image(image);
        c.image_ref = "sha256:abc".into();
        c.image_id = "sha256:def".into();
        c.state = api::ContainerState::CONTAINER_EXITED;
        c.created_at = 1_700_000_000_000_000_000 + i as i64;
        c.labels = labels(&[
            ("io.kubernetes.pod.uid", "u1"),
            ("io.kubernetes.container.name", "app"),
            ("app", "web"),
        ]);
        c.annotations = labels(&[("io.kubernetes.container.hash", "1234"), ("x", "")]);
        c
    }

    fn full_sandbox(i: usize) -> api::PodSandbox {
        let mut s = api::PodSandbox::new();
        s.id = format!("s{i}");
        let mut m = api::PodSandboxMetadata::new();
        m.name = "web".into();
        m.uid = "u1".into();
        m.namespace = "team".into();
        m.attempt = 2;
        s.set_metadata(m);
        s.state = api::PodSandboxState::SANDBOX_READY;
        s.created_at = 5;
        s.labels = labels(&[("io.kubernetes.pod.uid", "u1"), ("tier", "front")]);
        s.annotations = labels(&[("kubernetes.io/config.seen", "now")]);
        s.runtime_handler = "runc".into();
        s
    }

    #[test]
    fn a_brief_listing_is_the_full_one_without_what_the_relist_does_not_read() {
        let mut resp = api::ListContainersResponse::new();
        resp.containers = (0..3).map(full_container).collect();
        // An empty container (every field at its default) is listed too.
        resp.containers.push(api::Container::new());
        let wire = resp.write_to_bytes().unwrap();
        let brief = containers(&wire, KEEP).unwrap();
        let expected: Vec<_> = resp
            .containers
            .iter()
            .map(|c| brief_container(c, KEEP))
            .collect();
        assert_eq!(brief, expected);
        assert_eq!(brief[1].labels.len(), 2);
        assert!(brief[1].annotations.is_empty() && brief[1].image.is_none());
        assert_eq!(brief[2].get_metadata().get_name(), "app-é2");

        let mut resp = api::ListPodSandboxResponse::new();
        resp.items = (0..2).map(full_sandbox).collect();
        let wire = resp.write_to_bytes().unwrap();
        let brief = sandboxes(&wire, KEEP).unwrap();
        let expected: Vec<_> = resp.items.iter().map(|s| brief_sandbox(s, KEEP)).collect();
        assert_eq!(brief, expected);
        assert_eq!(brief[0].get_metadata().get_namespace(), "team");
        assert!(brief[0].runtime_handler.is_empty());

        assert!(containers(&[], KEEP).unwrap().is_empty());
    }

    #[test]
    fn a_listing_matches_what_was_seen_only_with_the_same_objects_in_the_same_states() {
        let mut resp = api::ListContainersResponse::new();
        resp.containers = (0..3).map(full_container).collect();
        let wire = resp.write_to_bytes().unwrap();
        let seen = Seen::of(&wire, CONTAINER_STATE_FIELD).unwrap();
        assert!(seen.matches(&wire, CONTAINER_STATE_FIELD).unwrap());

        // In another order: the same listing.
        let mut reordered = resp.clone();
        reordered.containers.swap(0, 2);
        let other = reordered.write_to_bytes().unwrap();
        assert!(seen.matches(&other, CONTAINER_STATE_FIELD).unwrap());

        let changed = |f: &dyn Fn(&mut api::ListContainersResponse)| {
            let mut r = resp.clone();
            f(&mut r);
            seen.matches(&r.write_to_bytes().unwrap(), CONTAINER_STATE_FIELD)
                .unwrap()
        };
        assert!(!changed(
            &|r| r.containers[1].state = api::ContainerState::CONTAINER_RUNNING
        ));
        // CONTAINER_CREATED is 0: not on the wire at all.
        assert!(!changed(
            &|r| r.containers[1].state = api::ContainerState::CONTAINER_CREATED
        ));
        assert!(!changed(&|r| {
            r.containers.pop();
        }));
        assert!(!changed(&|r| r.containers.push(full_container(7))));
        assert!(!changed(&|r| r.containers[0].id = "c9".into()));
        assert!(!changed(&|r| {
            r.containers[0].labels.insert("more".into(), "x".into());
        }));
        // One object listed twice in place of another.
        assert!(!changed(&|r| r.containers[2] = r.containers[1].clone()));

        // Sandboxes: the state is field 3.
        let mut resp = api::ListPodSandboxResponse::new();
        resp.items = (0..2).map(full_sandbox).collect();
        let wire = resp.write_to_bytes().unwrap();
        let seen = Seen::of(&wire, SANDBOX_STATE_FIELD).unwrap();
        assert!(seen.matches(&wire, SANDBOX_STATE_FIELD).unwrap());
        resp.items[0].state = api::PodSandboxState::SANDBOX_NOTREADY;
        let wire = resp.write_to_bytes().unwrap();
        assert!(!seen.matches(&wire, SANDBOX_STATE_FIELD).unwrap());
        assert!(Seen::default().matches(&[], SANDBOX_STATE_FIELD).unwrap());
        assert!(seen.matches(&[0x0a, 0x01], SANDBOX_STATE_FIELD).is_err());
    }

    #[test]
    fn the_last_listing_is_handed_out_again_while_nothing_changes() {
        let mut resp = api::ListContainersResponse::new();
        resp.containers = (0..2).map(full_container).collect();
        let wire = resp.write_to_bytes().unwrap();
        let mut last = None;
        let state = CONTAINER_STATE_FIELD;
        let first = listing(&mut last, &wire, KEEP, state, containers).unwrap();
        let again = listing(&mut last, &wire, KEEP, state, containers).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // Other labels kept: decoded again.
        let other = listing(&mut last, &wire, &KEEP[..1], state, containers).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(other[0].labels.len(), 1);
        resp.containers[0].state = api::ContainerState::CONTAINER_RUNNING;
        let wire = resp.write_to_bytes().unwrap();
        let changed = listing(&mut last, &wire, &KEEP[..1], state, containers).unwrap();
        assert!(!Arc::ptr_eq(&other, &changed));
        assert_eq!(changed[0].state, api::ContainerState::CONTAINER_RUNNING);
        // A response that does not decode keeps nothing new.
        assert!(listing(&mut last, &[0x0b], KEEP, state, containers).is_err());
        let after = listing(&mut last, &wire, &KEEP[..1], state, containers).unwrap();
        assert!(Arc::ptr_eq(&changed, &after));
    }

    #[test]
    fn fields_unknown_to_this_cri_version_are_skipped() {
        let mut c = full_container(1);
        // Field 99 as a varint, a fixed64, a fixed32 and a string, then a known field.
        let mut extra = Vec::new();
        extra.extend_from_slice(&[0x98, 0x06, 0x05]);
        extra.extend_from_slice(&[0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]);
        extra.extend_from_slice(&[0x9d, 0x06, 1, 2, 3, 4]);
        extra.extend_from_slice(&[0x9a, 0x06, 2, b'h', b'i']);
        let mut one = c.write_to_bytes().unwrap();
        one.extend_from_slice(&extra);
        // A state value from a newer CRI.
        one.extend_from_slice(&[0x30, 0x09]);
        let mut wire = vec![0x0a];
        let mut len = one.len();
        while len >= 0x80 {
            wire.push((len as u8) | 0x80);
            len >>= 7;
        }
        wire.push(len as u8);
        wire.extend_from_slice(&one);
        let brief = containers(&wire, KEEP).unwrap();
        c.state = api::ContainerState::CONTAINER_UNKNOWN;
        assert_eq!(brief, vec![brief_container(&c, KEEP)]);
    }

    #[test]
    fn a_cut_or_malformed_response_is_an_error_never_a_panic() {
        let mut resp = api::ListContainersResponse::new();
        resp.containers = (0..2).map(full_container).collect();
        let wire = resp.write_to_bytes().unwrap();
        for len in 0..wire.len() {
            // Any prefix either decodes (cut between two fields of the response) or fails.
            let _ = containers(&wire[..len], KEEP);
        }
        let cut = &wire[..wire.len() - 1];
        assert!(containers(cut, KEEP).is_err());
        // Wire type 3 (a group), field number 0, an eleven-byte varint, bad UTF-8.
        assert!(containers(&[0x0b], KEEP).is_err());
        assert!(containers(&[0x00, 0x01], KEEP).is_err());
        assert!(containers(
            &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            KEEP
        )
        .is_err());
        let e = containers(&[0x0a, 0x03, 0x0a, 0x01, 0xff], KEEP).unwrap_err();
        assert_eq!(e.0, "id is not UTF-8");
        let e = sandboxes(&[0x0a, 0x02, 0x18, 0x80], KEEP).unwrap_err();
        assert_eq!(e.0, "truncated or overlong varint");
    }
}
