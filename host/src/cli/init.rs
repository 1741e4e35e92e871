//! `warden init`: a new data directory (vault master key, server key, first Privileged
//! Administrator) and the server's self-signed TLS certificate, whose fingerprint it prints
//! for the clients to pin.

use clap::Args;

use super::DataArg;
use crate::store::DataDir;
use crate::tls::{Fingerprint, ServerTls};

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub(super) data: DataArg,
    /// Another name (host name or IP address) clients reach the server by, put in its
    /// certificate beside localhost, 127.0.0.1 and ::1; repeatable. Not needed by clients
    /// that pin the certificate's fingerprint.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub(super) tls_names: Vec<String>,
}

/// What a new data directory gives its creator.
pub(super) struct Initialised {
    /// The first administrator's token (shown once).
    pub(super) admin_token: String,
    /// The fingerprint of the server certificate made for it.
    pub(super) fingerprint: Fingerprint,
}

/// Creates a data directory with the first Privileged Administrator and a self-signed
/// server certificate in `DATA/tls/`.
pub(super) fn init_data_dir(data: &DataArg, tls_names: &[String]) -> anyhow::Result<Initialised> {
    // A bad name is refused before anything is created.
    ServerTls::check_names(tls_names)?;
    let dir = DataDir::init_at(&data.data, &data.key_source()?, &data.location())?;
    let admin_token = super::serve::bootstrap_admin(&dir)?;
    let fingerprint =
        ServerTls::generate_self_signed(&data.data.join(crate::tls::TLS_DIR), tls_names)?;
    Ok(Initialised {
        admin_token,
        fingerprint,
    })
}

pub fn run(args: InitArgs) -> anyhow::Result<i32> {
    let done = init_data_dir(&args.data, &args.tls_names)?;
    let key = match args.data.key_source()? {
        crate::vault::MasterKeySource::File(path) => format!("{}, mode 0600", path.display()),
        _ => "external (not stored in the data directory)".to_string(),
    };
    println!(
        "initialised {} (master key: {key})",
        args.data.data.display()
    );
    println!("admin token (shown once, keep it): {}", done.admin_token);
    let (cert, _) = ServerTls::data_dir_files(&args.data.data);
    println!("server certificate: {}", cert.display());
    println!("server certificate fingerprint: {}", done.fingerprint);
    Ok(0)
}
