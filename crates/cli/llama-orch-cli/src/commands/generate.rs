//! `llorch completions SHELL` and `llorch man [--dir DIR]`: generated from the clap definition
//! (clap_complete, clap_mangen), so they never drift from the real command line. Packages run
//! them at build time (see the crate README).

use std::io::Write;

use clap::CommandFactory;

use crate::control_args::ControlCommand;
use crate::error::{EXIT_LOCAL, EXIT_OK};
use crate::{Cli, Command};

/// Runs `completions` or `man`; `None` for every other command. Needs no server.
pub(crate) fn generate(
    cmd: &Command,
    out: &mut (impl Write + ?Sized),
    err: &mut (impl Write + ?Sized),
) -> Option<i32> {
    let result = match cmd {
        Command::Control(ControlCommand::Completions { shell }) => {
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "llorch", &mut buf);
            out.write_all(&buf)
        }
        Command::Control(ControlCommand::Man { dir: None }) => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut buf)
                .and_then(|()| out.write_all(&buf))
        }
        Command::Control(ControlCommand::Man { dir: Some(dir) }) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), dir))
            .and_then(|()| writeln!(err, "wrote man pages into {}", dir.display())),
        _ => return None,
    };
    Some(match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_LOCAL
        }
    })
}
