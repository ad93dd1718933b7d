//! `riffle`: the command-line front end of riffle-core.

fn main() {
    eprintln!("riffle: the command line lands with the runtime (see the issues)");
    std::process::exit(2);
}
