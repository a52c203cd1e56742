//! Getting the passphrase. Never from a command-line argument (visible in `ps`). In order:
//! `--password-file`/`--password-command` typed on the command line (the most specific
//! choice wins), then `SLUICE_PASSWORD`, then `SLUICE_PASSWORD_FILE`/`SLUICE_PASSWORD_COMMAND`,
//! then a prompt on the terminal. Files and commands give their first line.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use zeroize::Zeroizing;

#[derive(Clone, Debug, Default)]
pub struct PasswordSource {
    pub file: Option<std::path::PathBuf>,
    pub command: Option<String>,
    /// `file` / `command` were typed on the command line rather than set in the environment.
    pub file_on_command_line: bool,
    pub command_on_command_line: bool,
}

pub type Passphrase = Zeroizing<Vec<u8>>;

/// The first line, without its line ending (LF or CRLF). Anything after it is ignored, as the
/// `--password-file` help says: a passphrase can never hold a newline, so whatever a file or
/// command gives can also be typed at the prompt.
fn first_line(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == b'\n') {
        v.truncate(i);
    }
    if v.last() == Some(&b'\r') {
        v.pop();
    }
    v
}

/// The first line of a passphrase file (also `copy --from-password-file`).
pub(crate) fn read_file(f: &std::path::Path) -> Result<Passphrase> {
    from_file(f)
}

fn from_file(f: &std::path::Path) -> Result<Passphrase> {
    let bytes = Zeroizing::new(
        std::fs::read(f).with_context(|| format!("cannot read password file {}", f.display()))?,
    );
    Ok(Zeroizing::new(first_line(bytes.to_vec())))
}

fn from_command(cmd: &str) -> Result<Passphrase> {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run password command `{cmd}`"))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        bail!("password command `{cmd}` failed ({})", out.status);
    }
    Ok(Zeroizing::new(first_line(stdout.to_vec())))
}

impl PasswordSource {
    /// The passphrase for an existing repository (`confirm` = ask twice on a terminal, for
    /// init), and where it came from, to name in a "wrong passphrase" error.
    pub fn get(&self, confirm: bool) -> Result<Passphrase> {
        Ok(self.get_with_origin(confirm)?.0)
    }

    pub fn get_with_origin(&self, confirm: bool) -> Result<(Passphrase, String)> {
        if self.file_on_command_line && self.command_on_command_line {
            return Err(super::commands::usage(
                "give either --password-file or --password-command, not both",
            ));
        }
        let file = || {
            let f = self.file.as_deref().unwrap_or(std::path::Path::new(""));
            Ok::<_, anyhow::Error>((from_file(f)?, format!("password file {}", f.display())))
        };
        let command = || {
            let c = self.command.as_deref().unwrap_or("");
            Ok::<_, anyhow::Error>((from_command(c)?, format!("password command `{c}`")))
        };
        let (pw, origin) = if self.file_on_command_line && self.file.is_some() {
            file()?
        } else if self.command_on_command_line && self.command.is_some() {
            command()?
        } else if let Ok(p) = std::env::var("SLUICE_PASSWORD") {
            (Zeroizing::new(p.into_bytes()), "SLUICE_PASSWORD".to_owned())
        } else if self.file.is_some() {
            file()?
        } else if self.command.is_some() {
            command()?
        } else {
            (prompt(confirm)?, "the terminal prompt".to_owned())
        };
        if pw.is_empty() {
            bail!("the passphrase from {origin} is empty; an empty passphrase protects nothing");
        }
        Ok((pw, origin))
    }

    /// A second passphrase (key add / passwd): SLUICE_NEW_PASSWORD, --new-password-file, or a prompt.
    pub fn get_new(file: Option<&std::path::Path>) -> Result<Passphrase> {
        let pw = if let Some(f) = file {
            from_file(f)?
        } else if let Ok(p) = std::env::var("SLUICE_NEW_PASSWORD") {
            Zeroizing::new(p.into_bytes())
        } else {
            prompt_with(
                "new passphrase: ",
                true,
                "no new passphrase given: set SLUICE_NEW_PASSWORD or use --new-password-file (there is no terminal to ask on)",
            )?
        };
        if pw.is_empty() {
            bail!("the new passphrase is empty");
        }
        Ok(pw)
    }
}

fn prompt(confirm: bool) -> Result<Passphrase> {
    prompt_with(
        "passphrase: ",
        confirm,
        "no passphrase given: set SLUICE_PASSWORD_FILE, SLUICE_PASSWORD_COMMAND or SLUICE_PASSWORD (there is no terminal to ask on)",
    )
}

fn prompt_with(label: &str, confirm: bool, no_terminal: &str) -> Result<Passphrase> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| anyhow::anyhow!("{no_terminal}"))?;
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
    Ok(Zeroizing::new(first_line(line.as_bytes().to_vec())))
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn only_the_first_line_counts() {
        assert_eq!(first_line(b"secret\nother\n".to_vec()), b"secret");
        assert_eq!(first_line(b"secret\r\n".to_vec()), b"secret");
        assert_eq!(first_line(b"secret".to_vec()), b"secret");
        assert_eq!(first_line(b"\nsecret".to_vec()), b"");
    }
}
