//! Rebuilds when the stack shipped inside the binary changes (include_dir cannot tell Cargo).

fn main() {
    for dir in ["playbooks", "templates", "inventories", "dags"] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
