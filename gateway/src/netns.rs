//! Sockets inside another network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, so the
//! daemon keeps one worker thread per pod namespace, `setns`ed into it once,
//! and asks it to create sockets (listeners, upstream sockets) there. The
//! rest of the daemon never changes namespace; tokio drives the sockets from
//! any thread.
use std::{
    fs::File,
    io,
    net::TcpStream,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
};

use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Protocol, Socket, Type};

/// Spare upstream sockets a pod's worker keeps ready per family.
const SPARE_BATCH: usize = 16;
/// Below this many spares the worker is asked for a new batch.
const SPARE_LOW: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// Where a workload's sockets are made: the daemon's own namespace, or a
/// pod namespace through its worker.
#[derive(Clone, Debug)]
pub enum Netns {
    Host,
    Pod(Arc<NetnsWorker>),
}

impl Netns {
    /// Runs `f` in this namespace (inline for the host one).
    pub async fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self {
            Netns::Host => Ok(f()),
            Netns::Pod(w) => w.run(f).await,
        }
    }

    /// An unconnected upstream socket in this namespace carrying `mark`.
    /// Pod namespaces hand out spares made ahead by their worker, so the
    /// connection path does not wait for a thread switch.
    pub async fn upstream_socket(&self, ipv6: bool, mark: u32) -> io::Result<TcpStream> {
        match self {
            Netns::Host => marked_socket(ipv6, mark),
            Netns::Pod(w) => w.upstream_socket(ipv6, mark).await,
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Netns::Host => None,
            Netns::Pod(w) => Some(&w.path),
        }
    }
}

#[derive(Debug)]
pub struct NetnsWorker {
    path: PathBuf,
    jobs: Mutex<mpsc::Sender<Job>>,
    spares: Arc<Spares>,
}

/// Ready-made upstream sockets, [IPv4, IPv6].
#[derive(Debug, Default)]
struct Spares {
    sockets: [Mutex<Vec<TcpStream>>; 2],
    refilling: [AtomicBool; 2],
}

impl NetnsWorker {
    /// Starts a worker thread inside the namespace at `path`
    /// (`/var/run/netns/NAME`, `/proc/PID/ns/net`). The thread ends, and
    /// releases the namespace, when the worker is dropped.
    pub fn spawn(path: &Path) -> io::Result<Arc<Self>> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open network namespace {}: {e}", path.display()),
            )
        })?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let display = path.display().to_string();
        thread::Builder::new()
            .name("trigate-netns".into())
            .spawn(move || {
                if let Err(e) = setns(file.as_fd(), CloneFlags::CLONE_NEWNET) {
                    let _ = ready_tx.send(Err(io::Error::other(format!(
                        "setns into {display} failed: {e} (is it a network namespace file?)"
                    ))));
                    return;
                }
                drop(file);
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("netns worker thread died during start-up"))??;
        Ok(Arc::new(NetnsWorker {
            path: path.to_path_buf(),
            jobs: Mutex::new(tx),
            spares: Arc::default(),
        }))
    }

    async fn upstream_socket(&self, ipv6: bool, mark: u32) -> io::Result<TcpStream> {
        let i = usize::from(ipv6);
        let (spare, left) = {
            let mut list = lock(&self.spares.sockets[i]);
            let s = list.pop();
            (s, list.len())
        };
        if left < SPARE_LOW && !self.spares.refilling[i].swap(true, Ordering::AcqRel) {
            let spares = Arc::clone(&self.spares);
            // Best effort: if the worker is gone, the fallback below says so.
            let _ = self.submit(Box::new(move || {
                let mut made = Vec::with_capacity(SPARE_BATCH);
                for _ in 0..SPARE_BATCH {
                    match marked_socket(ipv6, mark) {
                        Ok(s) => made.push(s),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot make spare upstream sockets");
                            break;
                        }
                    }
                }
                lock(&spares.sockets[i]).extend(made);
                spares.refilling[i].store(false, Ordering::Release);
            }));
        }
        match spare {
            Some(s) => Ok(s),
            None => self.run(move || marked_socket(ipv6, mark)).await?,
        }
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        lock(&self.jobs)
            .send(job)
            .map_err(|_| io::Error::other("netns worker has stopped"))
    }

    pub async fn run<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.submit(job)?;
        rx.await
            .map_err(|_| io::Error::other("netns worker dropped the job"))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned list of sockets is still a list of sockets.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An unconnected, marked, non-blocking TCP socket in the calling thread's
/// namespace. The mark is what the connect programs skip (no loop back
/// into the daemon); setting it needs CAP_NET_ADMIN.
pub fn marked_socket(ipv6: bool, mark: u32) -> io::Result<TcpStream> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// `SO_NETNS_COOKIE`: the id of the namespace a socket lives in, as
/// `bpf_get_netns_cookie` reports it.
pub fn netns_cookie(sock: &impl AsRawFd) -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the fd is a live socket; cookie/len point at a u64 and its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}
