//! The object store: every object keyed by (resource, namespace, name), one global
//! resourceVersion counter (etcd's revision), and the retained change log that watches replay
//! from. Request threads and the test thread share it behind one mutex; a condvar wakes
//! watch threads on every change. The API rules live in `registry.rs`: the store only
//! versions, records and notifies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{json, Value};

use super::meta::metadata_mut;
use super::resources::Resource;
use super::status::ApiError;

/// (resource, namespace or `""`, name).
pub type Key = (Resource, String, String);

/// What a write did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

/// One retained change, as watches replay it.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// Which resource changed.
    pub resource: Resource,
    /// Added, modified or deleted.
    pub change: ChangeType,
    /// The object after the change (for a delete: the last state, at the delete's RV).
    pub object: Value,
    /// The object before the change: a watch with a selector needs it to tell "moved out of
    /// the selection" (sent as DELETED) from "never matched".
    pub prev: Option<Value>,
}

/// The decision of a read-modify-write closure.
pub enum Write {
    /// Store this object (a create if none existed).
    Put(Value),
    /// Remove the object.
    Remove,

    /// Leave everything as is (a no-op update bumps nothing, as upstream).
    Keep,
}

/// The result of [`Store::write`].
#[derive(Debug)]
pub struct Written {
    /// The object as stored (or as removed, at the removal's resourceVersion).
    pub object: Value,
    /// `None` when the closure chose [`Write::Keep`].
    pub change: Option<ChangeType>,
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
    /// Signalled on every change and on every [`Store::poke`].
    changed: Condvar,
}

struct Inner {
    /// The global resourceVersion: that of the latest write.
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// The retained changes, oldest first, with consecutive resourceVersions.
    log: VecDeque<Arc<Change>>,
    /// How many changes to retain.
    window: usize,
    /// Every change with an RV above this is in `log`; a watch from an older RV gets 410.
    horizon: u64,
}

impl Store {
    /// An empty store retaining the last `window` changes.
    pub fn new(window: usize) -> Store {
        Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                window: window.max(1),
                horizon: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take every later request down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// All objects of a resource (in one namespace if given), in key order, and the
    /// resourceVersion they are consistent with.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, obj)| obj.clone())
            .collect();
        (items, inner.rv)
    }

    /// How many objects of `resource` match `pred`, read in place (no copies).
    pub fn count(&self, resource: Resource, pred: impl Fn(&Value) -> bool) -> usize {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .filter(|((r, _, _), obj)| *r == resource && pred(obj))
            .count()
    }

    /// Reads the object at `key`, lets `decide` choose the write, then versions, records and
    /// announces it, all under the lock, so concurrent writers serialize like etcd
    /// transactions.
    pub fn write<F>(&self, key: Key, decide: F) -> Result<Written, ApiError>
    where
        F: FnOnce(Option<&Value>) -> Result<Write, ApiError>,
    {
        let mut inner = self.lock();
        let current = inner.objects.get(&key);
        let decision = decide(current)?;
        let prev = current.cloned();
        let (mut object, change) = match (decision, prev.clone()) {
            (Write::Keep, Some(current)) => {
                return Ok(Written {
                    object: current,
                    change: None,
                })
            }
            (Write::Keep | Write::Remove, None) => return Err(ApiError::not_found(key.0, &key.2)),
            (Write::Put(object), None) => (object, ChangeType::Added),
            (Write::Put(object), Some(_)) => (object, ChangeType::Modified),
            (Write::Remove, Some(current)) => (current, ChangeType::Deleted),
        };
        inner.rv += 1;
        let rv = inner.rv;
        metadata_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        if change == ChangeType::Deleted {
            inner.objects.remove(&key);
        } else {
            inner.objects.insert(key.clone(), object.clone());
        }
        inner.log.push_back(Arc::new(Change {
            rv,
            resource: key.0,
            change,
            object: object.clone(),
            prev,
        }));
        while inner.log.len() > inner.window {
            if let Some(dropped) = inner.log.pop_front() {
                inner.horizon = dropped.rv;
            }
        }
        drop(inner);
        self.changed.notify_all();
        Ok(Written {
            object,
            change: Some(change),
        })
    }

    /// The changes after `rv` and the resourceVersion they reach, or `Err(horizon)` if some
    /// of them are no longer retained.
    pub fn changes_since(&self, rv: u64) -> Result<(Vec<Arc<Change>>, u64), u64> {
        let inner = self.lock();
        if rv < inner.horizon {
            return Err(inner.horizon);
        }
        let start = inner.log.partition_point(|c| c.rv <= rv);
        let changes = inner.log.range(start..).cloned().collect();
        Ok((changes, inner.rv.max(rv)))
    }

    /// The resourceVersion below which watches get 410 Gone.
    pub fn horizon(&self) -> u64 {
        self.lock().horizon
    }

    /// Blocks until a change after `rv`, a [`Store::poke`], or `timeout`.
    pub fn wait_for_change(&self, rv: u64, timeout: Duration) {
        let inner = self.lock();
        if inner.rv > rv {
            return;
        }
        let _unused = self
            .changed
            .wait_timeout(inner, timeout)
            .unwrap_or_else(|e| e.into_inner());
    }

    /// Wakes every waiting watch so it re-checks its stop conditions.
    pub fn poke(&self) {
        let _guard = self.lock();
        self.changed.notify_all();
    }

    /// Forgets every retained change: a watch from any earlier RV now gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.log.clear();
        inner.horizon = inner.rv;
    }
}
