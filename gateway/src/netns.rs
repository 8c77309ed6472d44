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
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::{mpsc, Arc},
    thread,
};

use nix::sched::{setns, CloneFlags};

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
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
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
            jobs: std::sync::Mutex::new(tx),
        }))
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
        self.jobs
            .lock()
            .map_err(|_| io::Error::other("netns worker lock poisoned"))?
            .send(job)
            .map_err(|_| io::Error::other("netns worker has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("netns worker dropped the job"))
    }
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
