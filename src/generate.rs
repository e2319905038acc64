//! The hidden `generate` subcommand: the man pages and the bash/zsh/fish completions, rendered
//! from the clap definition of [`crate::cli::Cli`] so they cannot drift from the real CLI.
//!
//! Invariants: hidden subcommands (this one) appear in no output; every file is written under
//! the `--out` directory with the name the Debian layout expects (`felhom-agent.1`,
//! `felhom-agent-<sub>.1`, `felhom-agent` for bash, `_felhom-agent` for zsh,
//! `felhom-agent.fish`), and each written path is printed on its own line.

use std::io;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand, ValueEnum};

/// Arguments of `felhom-agent generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Subcommand, Debug)]
pub enum What {
    /// Man pages: felhom-agent.1 and felhom-agent-<subcommand>.1.
    Man {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Completion script for one shell.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    /// The file name each shell's completion loader looks for.
    pub fn file_name(self, bin: &str) -> String {
        match self {
            Shell::Bash => bin.to_string(),
            Shell::Zsh => format!("_{bin}"),
            Shell::Fish => format!("{bin}.fish"),
        }
    }
}

/// Runs the subcommand; prints each written path. Exit code 0, or 1 on an I/O error.
pub fn run(args: &GenerateArgs) -> i32 {
    let res = match &args.what {
        What::Man { out } => man_pages(out),
        What::Completions { shell, out } => completions(*shell, out).map(|p| vec![p]),
    };
    match res {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            crate::cli::EXIT_OK
        }
        Err(e) => {
            eprintln!("felhom-agent: generate: {e}");
            crate::cli::EXIT_FAILED
        }
    }
}

/// The CLI as users see it: the real definition without its hidden subcommands (clap_complete
/// would otherwise offer them).
fn command() -> clap::Command {
    let full = crate::cli::Cli::command();
    let mut cmd = clap::Command::new("felhom-agent")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .arg_required_else_help(full.is_arg_required_else_help_set());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        cmd = cmd.long_about(about.clone());
    }
    for arg in full.get_arguments() {
        cmd = cmd.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    debug_assert_eq!(cmd.get_name(), full.get_name());
    cmd.build();
    cmd
}

/// Writes `felhom-agent.1` and one page per visible subcommand; returns the paths written.
pub fn man_pages(out: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let cmd = command();
    let bin = cmd.get_name().to_string();
    let source = format!("{bin} {}", cmd.get_version().unwrap_or_default());
    let mut written = Vec::new();
    written.push(write_page(&cmd, out, &bin, &source)?);
    // After build(), each subcommand's display name is "felhom-agent-<sub>".
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = sub.get_display_name().unwrap_or(sub.get_name()).to_string();
        written.push(write_page(sub, out, &name, &source)?);
    }
    Ok(written)
}

fn write_page(cmd: &clap::Command, out: &Path, name: &str, source: &str) -> io::Result<PathBuf> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name)
        .source(source)
        .manual("felhom-agent manual")
        .render(&mut buf)?;
    let path = out.join(format!("{name}.1"));
    std::fs::write(&path, buf)?;
    Ok(path)
}

/// Writes the completion script for `shell`; returns its path.
pub fn completions(shell: Shell, out: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let mut cmd = command();
    let bin = cmd.get_name().to_string();
    let mut buf = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, &bin, &mut buf)
        }
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, &bin, &mut buf),
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, &bin, &mut buf)
        }
    }
    let path = out.join(shell.file_name(&bin));
    std::fs::write(&path, buf)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("felhom-generate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn man_pages_cover_visible_subcommands_and_hide_generate() {
        let d = scratch("man");
        let paths = man_pages(&d).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names[0], "felhom-agent.1");
        assert!(
            names.contains(&"felhom-agent-backup-now.1".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"felhom-agent-run.1".to_string()),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.contains("generate")), "{names:?}");
        let main = std::fs::read_to_string(d.join("felhom-agent.1")).unwrap();
        assert!(main.starts_with(".ie \\n(.g .ds Aq"), "{}", &main[..80]);
        assert!(main.contains(".TH felhom-agent 1"), "{main}");
        assert!(main.contains("backup\\-now"), "{main}");
        assert!(!main.contains("generate"), "{main}");
        let sub = std::fs::read_to_string(d.join("felhom-agent-backup-now.1")).unwrap();
        assert!(sub.contains("\\-\\-no\\-wait"), "{sub}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn completions_have_the_loader_file_names_and_know_the_subcommands() {
        let d = scratch("compl");
        for (shell, file, marker) in [
            (Shell::Bash, "felhom-agent", "complete -F _felhom__agent"),
            (Shell::Zsh, "_felhom-agent", "#compdef felhom-agent"),
            (Shell::Fish, "felhom-agent.fish", "complete -c felhom-agent"),
        ] {
            let p = completions(shell, &d).unwrap();
            assert_eq!(p, d.join(file));
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains(marker), "{shell:?}: {text}");
            assert!(text.contains("backup-now"), "{shell:?}");
            assert!(
                !text.contains("generate"),
                "{shell:?}: hidden subcommand leaked"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn visible_command_matches_the_real_cli_minus_hidden_subcommands() {
        let mut full = crate::cli::Cli::command();
        full.build();
        let cmd = command();
        assert_eq!(cmd.get_name(), full.get_name());
        assert_eq!(cmd.get_version(), full.get_version());
        let names = |c: &clap::Command, hidden: bool| -> Vec<String> {
            c.get_subcommands()
                .filter(|s| hidden || !s.is_hide_set())
                .map(|s| s.get_name().to_string())
                .collect()
        };
        assert_eq!(names(&cmd, true), names(&full, false));
        assert!(names(&full, true).contains(&"generate".to_string()));
        let args = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().map(|a| a.get_id().to_string()).collect()
        };
        assert_eq!(args(&cmd), args(&full));
    }
}
