//! Test helpers for Cairn. [`seed`]: seeded, replayable randomness; [`history`]: a checker of
//! counter histories under faults; [`ports`]: partitions between loopback ports; [`child`]:
//! tests that run
//! (and crash or kill) a child copy of their own test binary; [`shim`]: `LD_PRELOAD` shims built
//! from C. The rest of this file: test
//! hosts — several "machines" on one Linux box, each a network namespace with its
//! own addresses, joined by a private bridge, so multi-host behaviour (advertised addresses,
//! partitions, cut links, IPv6, DNS names) is tested with the real kernel network stack.
//!
//! ```text
//!   root namespace                 namespaces (one per host)
//!   ┌──────────────────┐          ┌──────────────────────────┐
//!   │ bridge cbr<S>    │──veth────│ eth0 10.231.S.1/24        │  host 0
//!   │ 10.231.S.254/24  │          │      fd00:231:0:S::1/64   │
//!   │ fd00:231:0:S::fe │──veth────│ eth0 10.231.S.2/24 …      │  host 1
//!   └──────────────────┘          └──────────────────────────┘
//! ```
//!
//! # What it owns, and its invariants
//! - A [`Net`] owns a *slot* `S` (0..[`SLOTS`]): the bridge `cbr<S>`, the namespaces
//!   `cairn<S>-<i>`, the veths `cv<S>-<i>`, the subnets `10.231.S.0/24` and
//!   `fd00:231:0:S::/64`, and `/etc/netns/cairn<S>-<i>/`. A slot is held through an exclusive
//!   lock on `/tmp/cairn-testkit/slot-S.lock` for the life of the `Net`, so tests in parallel
//!   (threads or processes) never share names or addresses. Leftovers of a crashed earlier
//!   holder of the slot are removed when the slot is taken.
//! - Dropping a [`Net`] kills the children it started (SIGKILL, then waits), removes the
//!   namespaces, veths, bridge and `/etc/netns` entries, then releases the slot.
//! - Faults are nftables rules inside a host's namespace (table `inet cairn_testkit`): a cut
//!   host drops every packet but loopback; a partition drops packets between two sets of hosts.
//!   Addresses and routes are never touched, so healing restores exactly the old network.
//!   (`tc netem` delays need the `sch_netem` kernel module, absent on this project's CI kernel,
//!   so delays are injected in the mesh instead.)
//!
//! # Privileges
//! Namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN). [`Net::new`] returns
//! [`NetError::Unavailable`] when they cannot be made; tests use [`require_netns`] to skip
//! with a message, unless `CAIRN_REQUIRE_NETNS=1` (set by CI), which turns the skip into a
//! failure so CI can never pass by skipping.

pub mod child;
pub mod history;
pub mod ports;
pub mod seed;
pub mod shim;

pub use child::{abort_on_panic, tell_parent, ChildRun, CHILD_LINE};
pub use ports::{require_port_partition, PortPartition};
pub use seed::seeded_rng;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

/// Number of slots (concurrent [`Net`]s on one machine).
pub const SLOTS: u8 = 200;

/// Largest number of hosts in one [`Net`] (addresses `.1` to `.MAX_HOSTS`; `.254` is the bridge).
pub const MAX_HOSTS: usize = 64;

/// Where slot locks live.
const LOCK_DIR: &str = "/tmp/cairn-testkit";

/// The nftables table holding a host's fault rules.
const NFT_TABLE: &str = "cairn_testkit";

/// Why a [`Net`] could not be made or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// This machine cannot make network namespaces (not root, or no `ip`).
    #[error("network namespaces unavailable: {0}")]
    Unavailable(String),
    /// Every slot is held.
    #[error("all {SLOTS} testkit slots are in use")]
    NoSlot,
    /// More hosts than [`MAX_HOSTS`], or none.
    #[error("a net has 1..={MAX_HOSTS} hosts, not {0}")]
    HostCount(usize),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or why it could not start).
        stderr: String,
    },
    /// A file under `/etc/netns` or the lock directory could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Skips the calling test (returns from it) when namespaces are unavailable, printing why;
/// with `CAIRN_REQUIRE_NETNS=1` it panics instead, so CI cannot pass by skipping.
///
/// ```no_run
/// # fn demo() {
/// let Some(net) = cairn_testkit::require_netns(3) else { return };
/// # }
/// ```
pub fn require_netns(hosts: usize) -> Option<Net> {
    match Net::new(hosts) {
        Ok(net) => Some(net),
        Err(NetError::Unavailable(why)) if std::env::var_os("CAIRN_REQUIRE_NETNS").is_none() => {
            eprintln!("SKIPPED: this test needs network namespaces (run as root): {why}");
            None
        }
        Err(e) => panic!("cannot make test hosts: {e}"),
    }
}

/// One test host: a network namespace with an IPv4 and an IPv6 address on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Index in its [`Net`].
    pub index: usize,
    /// The namespace's name.
    pub ns: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address (unique local, no duplicate-address detection delay).
    pub v6: Ipv6Addr,
    veth: String,
}

impl Host {
    /// A command that runs `program` inside this host's namespace (`ip netns exec`), which
    /// also bind-mounts `/etc/netns/<ns>/hosts` over `/etc/hosts` when
    /// [`Net::set_hosts_file`] wrote one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Its addresses, IPv4 first.
    pub fn addrs(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }
}

/// N hosts on a private bridge; see the module doc. Everything is removed on drop.
#[derive(Debug)]
pub struct Net {
    slot: u8,
    hosts: Vec<Host>,
    children: Mutex<Vec<Child>>,
    /// Per host: the hosts it currently drops packets from/to (its partition peers).
    blocked: Mutex<Vec<BTreeSet<usize>>>,
    cut: Mutex<BTreeSet<usize>>,
    _lock: File,
}

impl Net {
    /// Makes `hosts` namespaces on a new bridge. Needs root.
    pub fn new(hosts: usize) -> Result<Net, NetError> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(NetError::HostCount(hosts));
        }
        probe()?;
        let (slot, lock) = take_slot()?;
        let mut net = Net {
            slot,
            hosts: Vec::new(),
            children: Mutex::new(Vec::new()),
            blocked: Mutex::new(vec![BTreeSet::new(); hosts]),
            cut: Mutex::new(BTreeSet::new()),
            _lock: lock,
        };
        remove_leftovers(slot);
        let bridge = net.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.bridge_v4()),
            "dev",
            &bridge,
        ])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", net.bridge_v6()),
            "dev",
            &bridge,
            "nodad",
        ])?;
        for index in 0..hosts {
            let host = net.make_host(index)?;
            net.hosts.push(host);
        }
        Ok(net)
    }

    fn make_host(&self, index: usize) -> Result<Host, NetError> {
        let slot = self.slot;
        let ns = format!("cairn{slot}-{index}");
        let veth = format!("cv{slot}-{index}");
        let peer = format!("cp{slot}-{index}");
        let v4 = Ipv4Addr::new(10, 231, slot, index as u8 + 1);
        let v6 = Ipv6Addr::new(0xfd00, 0x231, 0, u16::from(slot), 0, 0, 0, index as u16 + 1);
        run(&["ip", "netns", "add", &ns])?;
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ])?;
        run(&["ip", "link", "set", &veth, "master", &self.bridge()])?;
        run(&["ip", "link", "set", &veth, "up"])?;
        run(&["ip", "link", "set", &peer, "netns", &ns])?;
        let nsrun = |args: &[&str]| {
            let mut full = vec!["ip", "-n", ns.as_str()];
            full.extend_from_slice(args);
            run(&full)
        };
        nsrun(&["link", "set", &peer, "name", "eth0"])?;
        nsrun(&["link", "set", "lo", "up"])?;
        nsrun(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
        nsrun(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
        nsrun(&["link", "set", "eth0", "up"])?;
        Ok(Host {
            index,
            ns,
            v4,
            v6,
            veth,
        })
    }

    /// The hosts, in order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// This net's slot (names and subnets derive from it).
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The bridge's IPv4 address: the root namespace (the test process itself) reaches every
    /// host through it.
    pub fn bridge_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.slot, 254)
    }

    /// The bridge's IPv6 address.
    pub fn bridge_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x231, 0, u16::from(self.slot), 0, 0, 0, 0xfe)
    }

    fn bridge(&self) -> String {
        format!("cbr{}", self.slot)
    }

    /// Starts `cmd` (made with [`Host::command`] or any other way) and keeps the child, which
    /// is killed when the net is dropped unless [`Net::kill`] or the caller ended it first.
    /// Returns its pid.
    pub fn spawn(&self, mut cmd: Command) -> Result<u32, NetError> {
        let child = cmd.spawn().map_err(|e| NetError::Command {
            command: format!("{cmd:?}"),
            stderr: e.to_string(),
        })?;
        let pid = child.id();
        self.children.lock().unwrap().push(child);
        Ok(pid)
    }

    /// Sends SIGKILL to the child with this pid (started by [`Net::spawn`]) and reaps it.
    /// Returns false if no such child is kept.
    pub fn kill(&self, pid: u32) -> bool {
        let mut children = self.children.lock().unwrap();
        let Some(at) = children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        let mut child = children.swap_remove(at);
        let _ = child.kill();
        let _ = child.wait();
        true
    }

    /// Writes `/etc/hosts` as seen inside host `i` (`ip netns exec` bind-mounts it): each
    /// entry maps a name to an address, so a node there resolves seeds by DNS name.
    pub fn set_hosts_file(&self, i: usize, entries: &[(&str, IpAddr)]) -> Result<(), NetError> {
        let dir = Path::new("/etc/netns").join(&self.hosts[i].ns);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, addr) in entries {
            text.push_str(&format!("{addr} {name}\n"));
        }
        let file = dir.join("hosts");
        fs::write(&file, text).map_err(io(&file))
    }

    /// Cuts host `i` off: it drops every packet except on loopback, both ways, as if its
    /// cable were pulled. Its addresses stay; [`Net::heal`] restores it.
    pub fn cut(&self, i: usize) -> Result<(), NetError> {
        self.cut.lock().unwrap().insert(i);
        self.apply_rules(i)
    }

    /// Drops every packet between each host of `a` and each host of `b` (both directions);
    /// other traffic flows.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> Result<(), NetError> {
        {
            let mut blocked = self.blocked.lock().unwrap();
            for &x in a {
                for &y in b {
                    blocked[x].insert(y);
                    blocked[y].insert(x);
                }
            }
        }
        let touched: BTreeSet<usize> = a.iter().chain(b).copied().collect();
        for i in touched {
            self.apply_rules(i)?;
        }
        Ok(())
    }

    /// Unplugs host `i`'s cable: its bridge-side veth goes down (the host sees carrier loss,
    /// as `ip link set … down` on a real switch port). [`Net::plug`] undoes it.
    pub fn unplug(&self, i: usize) -> Result<(), NetError> {
        run(&["ip", "link", "set", &self.hosts[i].veth, "down"])
    }

    /// Plugs host `i`'s cable back in.
    pub fn plug(&self, i: usize) -> Result<(), NetError> {
        run(&["ip", "link", "set", &self.hosts[i].veth, "up"])
    }

    /// Removes every cut and partition (not unplugged cables: see [`Net::plug`]).
    pub fn heal(&self) -> Result<(), NetError> {
        self.cut.lock().unwrap().clear();
        for set in self.blocked.lock().unwrap().iter_mut() {
            set.clear();
        }
        for i in 0..self.hosts.len() {
            self.apply_rules(i)?;
        }
        Ok(())
    }

    /// Rewrites host `i`'s nftables table from the current cut/partition sets.
    fn apply_rules(&self, i: usize) -> Result<(), NetError> {
        let cut = self.cut.lock().unwrap().contains(&i);
        let blocked: Vec<usize> = self.blocked.lock().unwrap()[i].iter().copied().collect();
        let mut script = format!(
            "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\ntable inet {NFT_TABLE} {{\n"
        );
        for (chain, hook, dir4, dir6) in [
            ("input", "input", "ip saddr", "ip6 saddr"),
            ("output", "output", "ip daddr", "ip6 daddr"),
        ] {
            script.push_str(&format!(
                "  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n"
            ));
            if cut {
                let iface = if hook == "input" {
                    "iifname"
                } else {
                    "oifname"
                };
                script.push_str(&format!("    {iface} != \"lo\" drop\n"));
            }
            for &peer in &blocked {
                let h = &self.hosts[peer];
                script.push_str(&format!("    {dir4} {} drop\n", h.v4));
                script.push_str(&format!("    {dir6} {} drop\n", h.v6));
            }
            script.push_str("  }\n");
        }
        script.push_str("}\n");
        let mut cmd = self.hosts[i].command("nft");
        cmd.args(["-f", "-"]);
        run_with_stdin(cmd, &script)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for mut child in self.children.get_mut().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_leftovers(self.slot);
    }
}

/// Checks that namespaces can be made here, once per process.
fn probe() -> Result<(), NetError> {
    static PROBE: Mutex<Option<Result<(), String>>> = Mutex::new(None);
    let mut probe = PROBE.lock().unwrap();
    let result = probe.get_or_insert_with(|| {
        let name = format!("cairn-probe-{}", std::process::id());
        match output(&["ip", "netns", "add", &name]) {
            Ok(o) if o.status.success() => {
                let _ = output(&["ip", "netns", "del", &name]);
                match output(&["nft", "--version"]) {
                    Ok(o) if o.status.success() => Ok(()),
                    _ => Err("`nft` (Debian package nftables) is not installed".to_string()),
                }
            }
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run `ip`: {e}")),
        }
    });
    result.clone().map_err(NetError::Unavailable)
}

/// Takes the first free slot, holding its lock file.
fn take_slot() -> Result<(u8, File), NetError> {
    fs::create_dir_all(LOCK_DIR).map_err(|source| NetError::Io {
        path: LOCK_DIR.into(),
        source,
    })?;
    // Start at a per-process offset so parallel test processes rarely contend.
    let start = (std::process::id() % u32::from(SLOTS)) as u8;
    for k in 0..SLOTS {
        let slot = ((u16::from(start) + u16::from(k)) % u16::from(SLOTS)) as u8;
        let path = Path::new(LOCK_DIR).join(format!("slot-{slot}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| NetError::Io {
                path: path.clone(),
                source,
            })?;
        if file.try_lock().is_ok() {
            return Ok((slot, file));
        }
    }
    Err(NetError::NoSlot)
}

/// Removes whatever a holder of `slot` may have left (namespaces, veths, bridge, /etc/netns).
fn remove_leftovers(slot: u8) {
    // Delete the veths first, from the root side: deleting one end deletes its peer at once,
    // whereas a deleted namespace takes its devices down asynchronously (the kernel's netns
    // cleanup work), which would let a stale `cv<slot>-<i>` collide with the slot's next holder.
    let veth_prefix = format!("cv{slot}-");
    if let Ok(o) = output(&["ip", "-o", "link", "show"]) {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            // "12: cv98-0@if11: <...>"
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(&veth_prefix) {
                let _ = output(&["ip", "link", "del", name]);
            }
        }
    }
    let prefix = format!("cairn{slot}-");
    if let Ok(o) = output(&["ip", "netns", "list"]) {
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(&prefix) {
                let _ = output(&["ip", "netns", "del", name]);
                let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
            }
        }
    }
    // Deleting a namespace deletes the veth ends inside it and so their peers; the bridge
    // goes last.
    let _ = output(&["ip", "link", "del", &format!("cbr{slot}")]);
}

fn output(args: &[&str]) -> std::io::Result<Output> {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
}

fn run(args: &[&str]) -> Result<(), NetError> {
    let fail = |stderr: String| NetError::Command {
        command: args.join(" "),
        stderr,
    };
    let o = output(args).map_err(|e| fail(e.to_string()))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_string()))
    }
}

fn run_with_stdin(mut cmd: Command, stdin: &str) -> Result<(), NetError> {
    let command = format!("{cmd:?}");
    let fail = |stderr: String| NetError::Command {
        command: command.clone(),
        stderr,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let o = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(fail(String::from_utf8_lossy(&o.stderr).trim().to_string()))
    }
}
