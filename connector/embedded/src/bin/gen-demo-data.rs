//! Regenerates the bundled demo data: `cargo run -p lumenore-embedded --bin gen-demo-data [DIR]`
//! (default DIR: connector/embedded/demo next to this crate).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("demo"));
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in lumenore_embedded::demo::generate() {
        std::fs::write(dir.join(name), &bytes)?;
        eprintln!("wrote {} ({} bytes)", dir.join(name).display(), bytes.len());
    }
    Ok(())
}
