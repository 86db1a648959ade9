//! A throwaway PostgreSQL server of a test's own, for faults the shared server must not suffer:
//! restarts (clean and crash) while the system under test is using it. `initdb` into a temporary
//! directory, listening on a free loopback port with trust auth; stopped and removed on drop.
//! Needs the server binaries (`pg_config --bindir`, else `/usr/lib/postgresql/<newest>/bin`);
//! as root it runs them as the `postgres` user, as Postgres refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How the server goes down before it comes back.
#[derive(Debug, Clone, Copy)]
pub enum Restart {
    /// `pg_ctl restart -m fast`: sessions are terminated, a clean shutdown checkpoint.
    Fast,
    /// `pg_ctl restart -m immediate`: processes killed, crash recovery from the WAL at start.
    Immediate,
}

pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Create and start a server. Panics with the reason when it cannot (a test that needs it
    /// must not pass without it).
    pub fn start() -> Self {
        let bin =
            bindir().expect("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package");
        let as_postgres = is_root();
        let dir = std::env::temp_dir().join(format!("tidegate-pg-{}", uuid::Uuid::new_v4().simple()));
        let port = free_port();
        let c = Self { bin, dir, port, as_postgres };
        let init = c.run(
            "initdb",
            &["-D", c.dir_str(), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync", "--locale", "C"],
        );
        assert!(init.status.success(), "initdb failed: {}", String::from_utf8_lossy(&init.stderr));
        // The socket in the data directory (writable by the server's user), TCP on loopback only.
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 200\n",
            c.dir.display()
        );
        // (Root, or the user initdb ran as, may append to the file initdb wrote.)
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(c.dir.join("postgresql.conf"))
            .expect("postgresql.conf written by initdb");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("configure the server");
        c.pg_ctl(&["start"]);
        c
    }

    /// An admin URL (database `postgres`, user `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Restart the server; returns once it accepts connections again.
    pub fn restart(&self, how: Restart) {
        let mode = match how {
            Restart::Fast => "fast",
            Restart::Immediate => "immediate",
        };
        self.pg_ctl(&["restart", "-m", mode]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let log = self.dir.join("server.log");
        let log = log.to_string_lossy().into_owned();
        let mut all = vec!["-D", self.dir_str(), "-l", &log, "-w", "-t", "60"];
        all.extend_from_slice(args);
        let out = self.run("pg_ctl", &all);
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    fn dir_str(&self) -> &str {
        self.dir.to_str().expect("temporary directory path is UTF-8")
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        // The server must not inherit the test's PG* settings.
        cmd.args(args).env_remove("PGHOST").env_remove("PGPORT").env_remove("PGDATA");
        cmd.output().unwrap_or_else(|e| panic!("{}: {e}", program.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", self.dir_str(), "-w", "-t", "30", "stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bindir() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("initdb").exists());
    from_config.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| {
                let e = e.ok()?;
                let v = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .filter(|(_, p)| Path::new(p).join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().map(|(_, p)| p)
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
