//! Getting the passphrase: from SLUICE_PASSWORD, a file, a command, or a terminal prompt,
//! in that order. Never from a command-line argument (visible in `ps`).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use zeroize::Zeroizing;

#[derive(Clone, Debug, Default)]
pub struct PasswordSource {
    pub file: Option<std::path::PathBuf>,
    pub command: Option<String>,
}

pub type Passphrase = Zeroizing<Vec<u8>>;

fn strip_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

impl PasswordSource {
    /// The passphrase for an existing repository (`confirm` = ask twice on a terminal, for init).
    pub fn get(&self, confirm: bool) -> Result<Passphrase> {
        let pw = if let Ok(p) = std::env::var("SLUICE_PASSWORD") {
            Zeroizing::new(p.into_bytes())
        } else if let Some(f) = &self.file {
            let bytes = std::fs::read(f)
                .with_context(|| format!("cannot read password file {}", f.display()))?;
            Zeroizing::new(strip_newline(bytes))
        } else if let Some(cmd) = &self.command {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("cannot run password command `{cmd}`"))?;
            if !out.status.success() {
                bail!("password command `{cmd}` failed ({})", out.status);
            }
            Zeroizing::new(strip_newline(out.stdout))
        } else {
            prompt(confirm)?
        };
        if pw.is_empty() {
            bail!("the passphrase is empty; an empty passphrase protects nothing");
        }
        Ok(pw)
    }

    /// A second passphrase (key add / passwd): SLUICE_NEW_PASSWORD, --new-password-file, or a prompt.
    pub fn get_new(file: Option<&std::path::Path>) -> Result<Passphrase> {
        let pw = if let Ok(p) = std::env::var("SLUICE_NEW_PASSWORD") {
            Zeroizing::new(p.into_bytes())
        } else if let Some(f) = file {
            Zeroizing::new(strip_newline(std::fs::read(f).with_context(|| {
                format!("cannot read password file {}", f.display())
            })?))
        } else {
            prompt_with("new passphrase: ", true)?
        };
        if pw.is_empty() {
            bail!("the new passphrase is empty");
        }
        Ok(pw)
    }
}

fn prompt(confirm: bool) -> Result<Passphrase> {
    prompt_with("passphrase: ", confirm)
}

fn prompt_with(label: &str, confirm: bool) -> Result<Passphrase> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| {
        anyhow::anyhow!(
            "no passphrase given: set SLUICE_PASSWORD_FILE, SLUICE_PASSWORD_COMMAND or SLUICE_PASSWORD (no terminal to ask on)"
        )
    })?;
    let first = read_hidden(&tty, label)?;
    if confirm {
        let again = read_hidden(&tty, "again: ")?;
        if first != again {
            bail!("the two passphrases differ");
        }
    }
    Ok(first)
}

fn read_hidden(tty: &std::fs::File, label: &str) -> Result<Passphrase> {
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain old data; tcgetattr fills it for a valid open descriptor.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the duration; term is a valid out-pointer.
    let have_term = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    let saved = term;
    if have_term {
        term.c_lflag &= !libc::ECHO;
        term.c_lflag |= libc::ECHONL;
        // SAFETY: as above, with a termios derived from the one the kernel gave us.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    let mut w = tty;
    let _ = w.write_all(label.as_bytes());
    let mut line = Zeroizing::new(String::new());
    let r = std::io::BufReader::new(tty).read_line(&mut line);
    if have_term {
        // SAFETY: restores the settings read above on the same descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    r.context("cannot read the passphrase from the terminal")?;
    Ok(Zeroizing::new(strip_newline(line.as_bytes().to_vec())))
}
