//! `warden tls fingerprint`: the server certificate's fingerprint again, for a client to pin.

use std::path::PathBuf;

use clap::Subcommand;

use crate::tls::{Fingerprint, ServerTls};

#[derive(Subcommand, Debug)]
pub enum TlsCommand {
    /// Print the fingerprint (sha256:…) of the data directory's server certificate, or of
    /// a PEM certificate file.
    Fingerprint {
        /// The data directory whose `tls/cert.pem` to read.
        #[arg(long, env = "WARDEN_DATA", conflicts_with = "cert")]
        data: Option<PathBuf>,
        /// A PEM certificate file (its first certificate).
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
    },
}

pub fn run(cmd: TlsCommand) -> anyhow::Result<i32> {
    let TlsCommand::Fingerprint { data, cert } = cmd;
    let path = match (cert, data) {
        (Some(cert), _) => cert,
        (None, Some(data)) => ServerTls::data_dir_files(&data).0,
        (None, None) => anyhow::bail!("give --data DIR or --cert FILE"),
    };
    println!("{}", Fingerprint::of_pem_file(&path)?);
    Ok(0)
}
