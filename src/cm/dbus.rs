//! A blocking client of systemd's manager (`org.freedesktop.systemd1.Manager`) for the
//! systemd cgroup driver: the calls upstream's cgroup manager makes through libcontainer
//! (`StartTransientUnit`, `SetUnitProperties`, `StopUnit`), each waiting for its job as
//! libcontainer does. As root it talks to systemd's own socket (`/run/systemd/private`,
//! no bus daemon in between), as go-systemd does for the upstream kubelet; otherwise to the
//! system bus. One connection, shared behind a mutex; a broken one is replaced on the next
//! call, which is then retried once.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustbus::connection::{Error as BusError, Timeout};
use rustbus::message_builder::{MarshalledMessage, MessageType};
use rustbus::params::{Base, Container, Param};
use rustbus::{DuplexConn, MessageBuilder, RpcConn};

/// systemd's private socket: a direct connection to the manager (root only).
pub const PRIVATE_SOCKET: &str = "/run/systemd/private";
/// The system bus, for a kubelet that is not root.
const SYSTEM_BUS: &str = "/run/dbus/system_bus_socket";
/// How long a unit job may take before the call fails (libcontainer waits 30 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(30);
/// Deadline of one method call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// A unit property's value, as systemd's D-Bus API types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `b`
    Bool(bool),
    /// `t`
    U64(u64),
    /// `s`
    Str(String),
    /// `as`
    Strs(Vec<String>),
}

/// One `(sv)` unit property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The property's D-Bus name (`MemoryMax`, `CPUWeight`, ...).
    pub name: &'static str,
    /// Its value.
    pub value: Value,
}

impl Property {
    /// A `t` property.
    pub fn u64(name: &'static str, value: u64) -> Self {
        Property {
            name,
            value: Value::U64(value),
        }
    }

    /// A `b` property.
    pub fn bool(name: &'static str, value: bool) -> Self {
        Property {
            name,
            value: Value::Bool(value),
        }
    }

    fn to_param(&self) -> Result<Param<'static, 'static>, DbusError> {
        let value: Param = match &self.value {
            Value::Bool(b) => Base::Boolean(*b).into(),
            Value::U64(v) => Base::Uint64(*v).into(),
            Value::Str(s) => Base::String(s.clone()).into(),
            Value::Strs(list) => Container::make_array("s", list.iter().cloned().map(Base::String))
                .map_err(|e| DbusError::Marshal(format!("{}: {e:?}", self.name)))?
                .into(),
        };
        Ok(Container::Struct(vec![
            Base::String(self.name.to_string()).into(),
            Container::make_variant(value).into(),
        ])
        .into())
    }
}

/// Why a call to systemd failed.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// No connection could be made.
    #[error("connecting to systemd at {path}: {reason}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The connection broke or timed out during a call.
    #[error("systemd {method}: {reason}")]
    Transport {
        /// The method called.
        method: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// systemd answered with a D-Bus error.
    #[error("systemd {method} {unit}: {name}: {message}")]
    Remote {
        /// The method called.
        method: &'static str,
        /// The unit it was called on.
        unit: String,
        /// The D-Bus error name (`org.freedesktop.systemd1.NoSuchUnit`, ...).
        name: String,
        /// systemd's message.
        message: String,
    },
    /// The unit's job ended with a result other than `done`.
    #[error("systemd job for {unit} ended with result {result:?}")]
    Job {
        /// The unit.
        unit: String,
        /// The job's result (`failed`, `canceled`, `timeout`, ...).
        result: String,
    },
    /// The unit's job did not end in time.
    #[error("timed out after {}s waiting for systemd to {what} {unit}", JOB_TIMEOUT.as_secs())]
    JobTimeout {
        /// `create` or `stop`.
        what: &'static str,
        /// The unit.
        unit: String,
    },
    /// A message could not be built or read.
    #[error("systemd D-Bus message: {0}")]
    Marshal(String),
}

impl DbusError {
    /// The D-Bus error name when systemd answered with one.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            DbusError::Remote { name, .. } => Some(name),
            _ => None,
        }
    }

    fn broken_connection(&self) -> bool {
        matches!(self, DbusError::Transport { .. })
    }
}

/// The socket to talk to systemd on, and whether it is systemd itself (no bus daemon, no
/// `Hello`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The unix socket.
    pub path: PathBuf,
    /// `true` for systemd's private socket, `false` for a bus daemon.
    pub direct: bool,
}

impl Address {
    /// systemd's private socket for root, else the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when
    /// it names a `unix:path=`), as go-systemd chooses for the upstream kubelet.
    pub fn for_this_process() -> Self {
        if rustix::process::geteuid().is_root() {
            return Address {
                path: PathBuf::from(PRIVATE_SOCKET),
                direct: true,
            };
        }
        let path = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
            .ok()
            .and_then(|a| a.strip_prefix("unix:path=").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(SYSTEM_BUS));
        Address {
            path,
            direct: false,
        }
    }
}

/// A connection to systemd's manager.
#[derive(Debug)]
pub struct Systemd {
    address: Address,
    conn: Mutex<Option<Conn>>,
    version: u32,
}

struct Conn {
    rpc: RpcConn,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conn")
    }
}

fn transport(method: &'static str, e: &BusError) -> DbusError {
    DbusError::Transport {
        method,
        reason: e.to_string(),
    }
}

impl Conn {
    fn open(address: &Address) -> Result<Conn, DbusError> {
        let connect_err = |reason: String| DbusError::Connect {
            path: address.path.clone(),
            reason,
        };
        let addr = nix::sys::socket::UnixAddr::new(address.path.as_path())
            .map_err(|e| connect_err(e.to_string()))?;
        let mut duplex =
            DuplexConn::connect_to_bus(addr, false).map_err(|e| connect_err(e.to_string()))?;
        if !address.direct {
            duplex
                .send_hello(Timeout::Duration(CALL_TIMEOUT))
                .map_err(|e| connect_err(format!("Hello: {e}")))?;
        }
        let mut rpc = RpcConn::new(duplex);
        // Signals other than the end of a job are of no use here.
        rpc.set_filter(Box::new(|msg| {
            msg.typ != MessageType::Signal || msg.dynheader.member.as_deref() == Some("JobRemoved")
        }));
        let mut conn = Conn { rpc };
        conn.ping_until_answered()
            .map_err(|e| connect_err(e.to_string()))?;
        // Job ends are only signalled to subscribers.
        conn.call(manager_call("Subscribe"), "Subscribe", "")
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(conn)
    }

    /// Pings systemd until it answers. A message that arrives together with the
    /// handshake's `BEGIN` line can sit unread in systemd's buffer (its bus library reads it
    /// with `BEGIN` and then waits for the socket to become readable again), so the first
    /// call is a `Ping`, repeated every 100 ms: each new one makes systemd read on and
    /// answer. Answers to the earlier ones are dropped.
    fn ping_until_answered(&mut self) -> Result<(), DbusError> {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut sent = Vec::new();
        loop {
            let mut ping = MessageBuilder::new()
                .call("Ping")
                .on(MANAGER_PATH)
                .with_interface("org.freedesktop.DBus.Peer")
                .at(DESTINATION)
                .build();
            let serial = self
                .rpc
                .send_message(&mut ping)
                .map_err(|e| transport("Ping", &e))?
                .write(Timeout::Duration(CALL_TIMEOUT))
                .map_err(|(ctx, e)| {
                    ctx.force_finish();
                    transport("Ping", &e)
                })?;
            sent.push(serial);
            match self
                .rpc
                .wait_response(serial, Timeout::Duration(Duration::from_millis(100)))
            {
                Ok(_) => break,
                Err(BusError::TimedOut) if Instant::now() < deadline => {}
                Err(e) => return Err(transport("Ping", &e)),
            }
        }
        let _ = self.rpc.refill_all();
        for serial in sent {
            let _ = self.rpc.try_get_response(serial);
        }
        Ok(())
    }

    /// Sends `msg` and returns the reply; a D-Bus error reply becomes [`DbusError::Remote`].
    fn call(
        &mut self,
        mut msg: MarshalledMessage,
        method: &'static str,
        unit: &str,
    ) -> Result<MarshalledMessage, DbusError> {
        let serial = self
            .rpc
            .send_message(&mut msg)
            .map_err(|e| transport(method, &e))?
            .write(Timeout::Duration(CALL_TIMEOUT))
            .map_err(|(ctx, e)| {
                ctx.force_finish();
                transport(method, &e)
            })?;
        let reply = self
            .rpc
            .wait_response(serial, Timeout::Duration(CALL_TIMEOUT))
            .map_err(|e| transport(method, &e))?;
        if reply.typ == MessageType::Error {
            let name = reply.dynheader.error_name.clone().unwrap_or_default();
            let message = reply.body.parser().get::<&str>().unwrap_or("").to_string();
            return Err(DbusError::Remote {
                method,
                unit: unit.to_string(),
                name,
                message,
            });
        }
        Ok(reply)
    }

    /// Drops job signals that arrived since the last call (jobs of other clients).
    fn drain(&mut self) -> Result<(), DbusError> {
        self.rpc.refill_all().map_err(|e| transport("read", &e))?;
        while self.rpc.try_get_signal().is_some() {}
        Ok(())
    }

    /// Waits for `JobRemoved` of `job`; its result must be `done`.
    fn wait_job(&mut self, job: &str, unit: &str, what: &'static str) -> Result<(), DbusError> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            while let Some(signal) = self.rpc.try_get_signal() {
                let mut parser = signal.body.parser();
                let Ok((_id, path, _unit, result)) =
                    parser.get4::<u32, rustbus::wire::ObjectPath<&str>, &str, &str>()
                else {
                    continue;
                };
                if path.as_ref() == job {
                    if result == "done" {
                        return Ok(());
                    }
                    return Err(DbusError::Job {
                        unit: unit.to_string(),
                        result: result.to_string(),
                    });
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DbusError::JobTimeout {
                    what,
                    unit: unit.to_string(),
                });
            }
            match self.rpc.refill_once(Timeout::Duration(left)) {
                Ok(_) | Err(BusError::TimedOut) => {}
                Err(e) => return Err(transport("waiting for a job", &e)),
            }
        }
    }
}

fn manager_call(method: &str) -> MarshalledMessage {
    MessageBuilder::new()
        .call(method)
        .on(MANAGER_PATH)
        .with_interface(MANAGER)
        .at(DESTINATION)
        .build()
}

fn params(properties: &[Property]) -> Result<Param<'static, 'static>, DbusError> {
    let list = properties
        .iter()
        .map(Property::to_param)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Container::make_array("(sv)", list.into_iter())
        .map_err(|e| DbusError::Marshal(format!("{e:?}")))?
        .into())
}

/// The job a unit call answers with (`o`).
fn job_path(reply: &MarshalledMessage) -> Result<String, DbusError> {
    let path = reply
        .body
        .parser()
        .get::<rustbus::wire::ObjectPath<&str>>()
        .map_err(|e| DbusError::Marshal(format!("job path: {e:?}")))?;
    Ok(path.as_ref().to_string())
}

fn push(msg: &mut MarshalledMessage, p: &Param) -> Result<(), DbusError> {
    msg.body
        .push_old_param(p)
        .map_err(|e| DbusError::Marshal(format!("{e:?}")))
}

/// The leading number of systemd's `Version` ("252.38-1~deb12u1" → 252).
pub fn major_version(version: &str) -> Option<u32> {
    let digits: String = version
        .trim_start_matches('v')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

impl Systemd {
    /// Connects to systemd (see [`Address::for_this_process`]) and reads its version.
    pub fn connect() -> Result<Systemd, DbusError> {
        Self::connect_to(Address::for_this_process())
    }

    /// Connects to systemd at `address`.
    pub fn connect_to(address: Address) -> Result<Systemd, DbusError> {
        let mut conn = Conn::open(&address)?;
        let mut msg = MessageBuilder::new()
            .call("Get")
            .on(MANAGER_PATH)
            .with_interface("org.freedesktop.DBus.Properties")
            .at(DESTINATION)
            .build();
        msg.body
            .push_param2(MANAGER, "Version")
            .map_err(|e| DbusError::Marshal(format!("{e:?}")))?;
        let reply = conn.call(msg, "Get Version", "")?;
        let version = reply
            .body
            .parser()
            .get::<rustbus::wire::unmarshal::traits::Variant>()
            .ok()
            .and_then(|v| v.get::<&str>().ok().and_then(major_version))
            .unwrap_or(0);
        Ok(Systemd {
            address,
            conn: Mutex::new(Some(conn)),
            version,
        })
    }

    /// systemd's major version (0 when it did not say).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The socket in use.
    pub fn path(&self) -> &Path {
        &self.address.path
    }

    /// Runs `f` on the connection, opening one when there is none; a call that failed on a
    /// broken connection is tried once more on a new one.
    fn with_conn<T>(&self, f: impl Fn(&mut Conn) -> Result<T, DbusError>) -> Result<T, DbusError> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(Conn::open(&self.address)?);
                if attempt > 0 {
                    log::info!("reconnected to systemd at {}", self.address.path.display());
                }
            }
            let Some(conn) = guard.as_mut() else {
                continue;
            };
            match conn.drain().and_then(|()| f(conn)) {
                Err(e) if e.broken_connection() && attempt == 0 => {
                    log::warn!("connection to systemd lost ({e}), reconnecting");
                    *guard = None;
                }
                other => return other,
            }
        }
        Err(DbusError::Connect {
            path: self.address.path.clone(),
            reason: "connection lost twice".to_string(),
        })
    }

    /// Starts transient unit `unit` with `properties` and waits for its job. A unit that is
    /// already loaded is left as it is (`Ok(false)`); the caller then updates it.
    pub fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[Property],
    ) -> Result<bool, DbusError> {
        let props = params(properties)?;
        let aux: Param = Container::make_array("(sa(sv))", std::iter::empty::<Param>())
            .map_err(|e| DbusError::Marshal(format!("{e:?}")))?
            .into();
        let result = self.with_conn(|conn| {
            let mut msg = manager_call("StartTransientUnit");
            push(&mut msg, &Param::from(unit))?;
            push(&mut msg, &Param::from("replace"))?;
            push(&mut msg, &props)?;
            push(&mut msg, &aux)?;
            let reply = conn.call(msg, "StartTransientUnit", unit)?;
            conn.wait_job(&job_path(&reply)?, unit, "create")
        });
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.remote_name() == Some("org.freedesktop.systemd1.UnitExists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `properties` on `unit` at runtime (not persisted across a systemd restart).
    pub fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[Property],
    ) -> Result<(), DbusError> {
        let props = params(properties)?;
        self.with_conn(|conn| {
            let mut msg = manager_call("SetUnitProperties");
            push(&mut msg, &Param::from(unit))?;
            push(&mut msg, &Param::from(true))?;
            push(&mut msg, &props)?;
            conn.call(msg, "SetUnitProperties", unit).map(drop)
        })
    }

    /// Stops `unit` and waits for its job; a unit systemd does not know is already gone.
    pub fn stop_unit(&self, unit: &str) -> Result<(), DbusError> {
        let result = self.with_conn(|conn| {
            let mut msg = manager_call("StopUnit");
            push(&mut msg, &Param::from(unit))?;
            push(&mut msg, &Param::from("replace"))?;
            let reply = conn.call(msg, "StopUnit", unit)?;
            conn.wait_job(&job_path(&reply)?, unit, "stop")
        });
        match result {
            Err(e)
                if matches!(
                    e.remote_name(),
                    Some(
                        "org.freedesktop.systemd1.NoSuchUnit"
                            | "org.freedesktop.DBus.Error.UnknownObject"
                    )
                ) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    /// Clears the failed state of `unit` (so a name can be started again after a failure).
    pub fn reset_failed_unit(&self, unit: &str) -> Result<(), DbusError> {
        self.with_conn(|conn| {
            let mut msg = manager_call("ResetFailedUnit");
            push(&mut msg, &Param::from(unit))?;
            conn.call(msg, "ResetFailedUnit", unit).map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_their_leading_number() {
        assert_eq!(major_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(major_version("v255"), Some(255));
        assert_eq!(major_version("unknown"), None);
    }

    #[test]
    fn properties_marshal_as_sv_structs() {
        let props = [
            Property::u64("MemoryMax", 64 << 20),
            Property::bool("Delegate", true),
            Property {
                name: "Wants",
                value: Value::Strs(vec!["kubepods.slice".into()]),
            },
        ];
        let p = params(&props).unwrap();
        let mut sig = String::new();
        p.make_signature(&mut sig);
        assert_eq!(sig, "a(sv)");
        let mut msg = manager_call("SetUnitProperties");
        push(&mut msg, &p).unwrap();
        assert_eq!(msg.get_sig(), "a(sv)");
    }

    #[test]
    fn a_missing_socket_is_a_connect_error_naming_it() {
        let err = Systemd::connect_to(Address {
            path: PathBuf::from("/nonexistent/rkubelet/systemd/private"),
            direct: true,
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("connecting to systemd at /nonexistent/rkubelet/systemd/private"),
            "{err}"
        );
    }
}
