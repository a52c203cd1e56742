//! Shell completions and man pages, generated from the same clap definitions as `--help`,
//! so that `--help`, `man sluice-ingest` and `sluice in<TAB>` never disagree.

use super::Cli;
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::Path;

/// `sluice completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = completable(&Cli::command());
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "sluice", &mut out);
    Ok(0)
}

/// `cmd` without its hidden subcommands (`man`), which clap_complete would offer otherwise;
/// hidden options it leaves out itself.
fn completable(cmd: &clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(completable),
        );
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_string());
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    out
}

/// `sluice man --out-dir DIR`: writes `sluice.1` and one page per visible subcommand, nested
/// ones too (`sluice-key-add.1`), into DIR. Prints the file names, one a line.
pub fn man_pages(out_dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut written = Vec::new();
    for (file, page) in render_man_pages() {
        let path = out_dir.join(&file);
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(file);
    }
    for f in written {
        println!("{f}");
    }
    Ok(0)
}

/// Every man page as (file name, roff text): `sluice.1`, `sluice-ingest.1`, `sluice-key-add.1`...
/// Hidden subcommands (this one) get none; `help` is not a page.
pub fn render_man_pages() -> Vec<(String, Vec<u8>)> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) {
        // Subcommands have no version of their own: name sluice's on every page's footer.
        let man = clap_mangen::Man::new(cmd.clone())
            .source(format!("sluice {}", env!("CARGO_PKG_VERSION")));
        let mut page = Vec::new();
        man.render(&mut page)
            .expect("rendering into a Vec cannot fail");
        out.push((man.get_filename(), page));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    // Built, subcommands carry the global options and their display names (sluice-key-add).
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible subcommand, nested ones as their own names: `key`, `add`, ...
    fn visible_subcommands(cmd: &clap::Command, out: &mut Vec<String>) {
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            out.push(s.get_name().to_string());
            visible_subcommands(s, out);
        }
    }

    #[test]
    fn bash_completions_name_every_subcommand() {
        let mut cmd = completable(&Cli::command());
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "sluice", &mut script);
        let script = String::from_utf8(script).unwrap();
        let words: std::collections::HashSet<&str> = script
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .collect();
        let mut subs = Vec::new();
        visible_subcommands(&Cli::command(), &mut subs);
        for must in [
            "init",
            "ingest",
            "snapshots",
            "cat",
            "mount",
            "key",
            "add",
            "completions",
        ] {
            assert!(
                subs.iter().any(|s| s == must),
                "{must} missing from {subs:?}"
            );
        }
        for s in &subs {
            assert!(
                words.contains(s.as_str()),
                "bash completion never offers {s:?}"
            );
        }
        // The packaging-only command is not offered.
        assert!(!words.contains("man"), "hidden `man` is offered");
    }

    /// The option lines of `--help` (`-q, --quiet`, `--name <NAME>`), in order.
    fn help_options(help: &str) -> Vec<String> {
        let mut in_options = false;
        let mut out = Vec::new();
        for l in help.lines().filter(|l| !l.trim().is_empty()) {
            if !l.starts_with(' ') {
                in_options = l.trim_end() == "Options:";
                continue;
            }
            let t = l.trim_start();
            if in_options && l.len() - t.len() <= 6 && t.starts_with('-') {
                out.push(t.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        out
    }

    /// The option lines of a man page's OPTIONS section (the line after each `.TP`), unescaped.
    fn man_options(roff: &str) -> Vec<String> {
        let mut in_options = false;
        let mut after_tp = false;
        let mut out = Vec::new();
        for l in roff.lines() {
            if l.starts_with(".SH") {
                in_options = l.trim() == ".SH OPTIONS";
                continue;
            }
            if after_tp && in_options && !l.starts_with('[') {
                let plain = l
                    .replace("\\fB", "")
                    .replace("\\fR", "")
                    .replace("\\fI", "")
                    .replace("\\-", "-");
                out.push(plain.split_whitespace().collect::<Vec<_>>().join(" "));
            }
            after_tp = l == ".TP";
        }
        out
    }

    #[test]
    fn ingest_help_and_man_page_list_the_same_options() {
        let pages = render_man_pages();
        let (_, page) = pages
            .iter()
            .find(|(f, _)| f == "sluice-ingest.1")
            .expect("a page for ingest");
        let man_lines = man_options(&String::from_utf8_lossy(page));
        // The page puts a default beside its option (`--expect <EXPECT> [default: auto]`),
        // --help after the description: the same words, in another place.
        let mut man = Vec::new();
        let mut defaults = Vec::new();
        for l in man_lines {
            match l.find(" [default: ") {
                Some(i) => {
                    defaults.push(l[i + 1..].to_string());
                    man.push(l[..i].to_string());
                }
                None => man.push(l),
            }
        }
        assert!(
            defaults.contains(&"[default: auto]".to_string()),
            "{defaults:?}"
        );

        let mut cmd = Cli::command();
        cmd.build();
        let ingest = cmd.find_subcommand_mut("ingest").unwrap();
        let help_text = ingest.render_long_help().to_string();
        let help = help_options(&help_text);
        for d in &defaults {
            assert!(help_text.contains(d.as_str()), "--help does not say {d}");
        }

        for must in [
            "--name <NAME>",
            "--streams <STREAMS>",
            "--repo <REPO>",
            "-q, --quiet",
        ] {
            assert!(
                help.iter().any(|h| h == must),
                "{must} not in --help: {help:?}"
            );
        }
        assert!(!help.iter().any(|h| h.contains("kdf")), "{help:?}");
        assert_eq!(
            help, man,
            "ingest --help and man sluice-ingest list different options"
        );
    }

    #[test]
    fn one_man_page_per_visible_subcommand() {
        let files: Vec<String> = render_man_pages().into_iter().map(|(f, _)| f).collect();
        for f in [
            "sluice.1",
            "sluice-ingest.1",
            "sluice-key-add.1",
            "sluice-repair-index.1",
        ] {
            assert!(files.iter().any(|g| g == f), "{f} missing from {files:?}");
        }
        assert!(
            !files
                .iter()
                .any(|f| f == "sluice-man.1" || f == "sluice-help.1"),
            "{files:?}"
        );
    }
}
