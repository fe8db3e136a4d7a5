//! The `edged` binary: flags, logging, and the command to run.

use edged::flags::{Command, Flags};

fn main() {
    edged::memory::limit_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let flags = match Flags::parse(&args) {
        Ok(f) => f,
        Err((text, code)) => {
            if code == 0 {
                println!("{text}");
            } else {
                eprintln!("{text}");
            }
            std::process::exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(flags.log_level.0)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    // Before the blocking pool's first use: its bound (src/pool.rs).
    edged::pool::init();
    let result: Result<(), Box<dyn std::error::Error>> = match &flags.command {
        None => {
            if let Err(e) = edged::agent::run(flags) {
                eprintln!("edged: {e}");
                std::process::exit(e.exit_code());
            }
            Ok(())
        }
        Some(Command::Get(cmd)) => std::process::exit(edged::inspect::main(&flags.root_dir, cmd)),
        Some(Command::Logs(cmd)) => std::process::exit(edged::containerlogs::main(
            &flags.root_dir,
            &flags.pod_log_dir,
            cmd,
        )),
        Some(Command::Exec(cmd)) => std::process::exit(edged::cli::exec::main_exec(&flags, cmd)),
        Some(Command::Attach(cmd)) => {
            std::process::exit(edged::cli::exec::main_attach(&flags, cmd))
        }
        Some(Command::Image(cmd)) => {
            edged::images::cli::run(&flags.root_dir, &flags.registry_options(), cmd)
                .map_err(Into::into)
        }
    };
    if let Err(e) = result {
        eprintln!("edged: {e}");
        std::process::exit(1);
    }
}
