//! felhom-agent: the command-line entry point (see `cli`).

use clap::Parser;

fn main() {
    let cli = felhom_agent::cli::Cli::parse();
    felhom_agent::cli::init_logging();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("felhom-agent: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(felhom_agent::cli::run(cli));
    std::process::exit(code);
}
