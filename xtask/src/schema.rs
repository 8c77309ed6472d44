//! `gateway/config.schema.json` is generated from `trigate schema`.

use std::{fs, path::Path};

use anyhow::{bail, Context, Result};

use crate::util::{cargo, output};

pub const SCHEMA_FILE: &str = "gateway/config.schema.json";

/// What `trigate schema` prints (built from the current sources).
fn generate(root: &Path) -> Result<Vec<u8>> {
    let schema = output(cargo(root).args(["run", "-q", "-p", "trigate", "--", "schema"])).context(
        "`trigate schema` failed: see the output above (a build error, or the daemon \
             lacks the `schema` subcommand of docs/CONTRACT.md)",
    )?;
    let text = String::from_utf8_lossy(&schema);
    if text.trim().is_empty() {
        bail!(
            "`trigate schema` printed nothing: does the daemon implement the `schema` \
             subcommand of docs/CONTRACT.md yet?"
        );
    }
    if !text.trim_start().starts_with('{') {
        bail!(
            "`trigate schema` did not print a JSON object (check the daemon's `schema` subcommand)"
        );
    }
    Ok(schema)
}

/// `cargo xtask schema`.
pub fn write(root: &Path) -> Result<()> {
    let schema = generate(root)?;
    let file = root.join(SCHEMA_FILE);
    if fs::read(&file).is_ok_and(|old| old == schema) {
        eprintln!("{SCHEMA_FILE} is up to date");
        return Ok(());
    }
    fs::write(&file, &schema).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("wrote {SCHEMA_FILE}");
    Ok(())
}

/// The test step: the committed schema matches the code.
pub fn check(root: &Path) -> Result<()> {
    let schema = generate(root)?;
    let file = root.join(SCHEMA_FILE);
    match fs::read(&file) {
        Ok(committed) if committed == schema => {
            eprintln!("{SCHEMA_FILE} is up to date");
            Ok(())
        }
        Ok(_) => bail!("{SCHEMA_FILE} differs from `trigate schema`: run cargo xtask schema"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("{SCHEMA_FILE} does not exist: run cargo xtask schema")
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", file.display())),
    }
}
