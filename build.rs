//! With the `tensorflow` feature: compiles the C++ kernel shim in `cc/` against the pip
//! TensorFlow and links it, whole, into the cdylib next to `libtensorflow_framework.so.2`.
//!
//! Flags come from `tf.sysconfig` of `$PYTHON` (default `python3`), or verbatim from
//! `TF_CFLAGS` / `TF_LFLAGS` when set (space-separated, as `tf.sysconfig` prints them); the
//! TensorFlow version compiled into the library (which the Python loader checks) from
//! `tf.__version__`, or `TF_VERSION`.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_TENSORFLOW").is_none() {
        return;
    }
    for var in ["PYTHON", "TF_CFLAGS", "TF_LFLAGS", "TF_VERSION"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=cc");
    println!("cargo:rerun-if-changed=include/kafka_dataset.h");

    let cflags = flags("TF_CFLAGS", "' '.join(tf.sysconfig.get_compile_flags())");
    let lflags = flags("TF_LFLAGS", "' '.join(tf.sysconfig.get_link_flags())");
    let version = flags("TF_VERSION", "tf.__version__").join("");
    // It becomes a C string literal: refuse only what would break one (nightlies say
    // e.g. 2.20.0-dev20250101).
    assert!(
        !version.is_empty()
            && !version
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control()),
        "unexpected TensorFlow version {version:?}"
    );

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("cc/kafka_dataset_op.cc")
        .include("include")
        .flag("-fvisibility=hidden")
        .flag("-fvisibility-inlines-hidden")
        .opt_level(2)
        // TensorFlow's headers print hundreds of warnings that are not ours.
        .warnings(false)
        .define("KD_BUILT_FOR_TF", format!("\"{version}\"").as_str())
        .cargo_metadata(false);
    for f in &cflags {
        // tf.sysconfig says --std=c++17; keep it, it matches what the cc crate passes through.
        build.flag(f);
    }
    build.compile("kd_tf_shim");

    let out_dir = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rustc-link-search=native={out_dir}");
    // Static registrations (REGISTER_OP, REGISTER_KERNEL_BUILDER) are unreferenced: without
    // whole-archive the linker drops them and the library loads with no op.
    println!("cargo:rustc-link-lib=static:+whole-archive=kd_tf_shim");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    for f in &lflags {
        if let Some(dir) = f.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else {
            println!("cargo:rustc-cdylib-link-arg={f}");
        }
    }
    // Keep every statically linked symbol (OpenSSL, librdkafka, zstd, zlib) local, so nothing
    // binds to the BoringSSL copy inside libtensorflow_framework, and refuse undefined symbols.
    println!("cargo:rustc-cdylib-link-arg=-Wl,--exclude-libs,ALL");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-Bsymbolic");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,defs");
}

/// `$var` split at whitespace, else what `expression` (over `tf`) prints in `$PYTHON`.
fn flags(var: &str, expression: &str) -> Vec<String> {
    if let Ok(v) = env::var(var) {
        return v.split_whitespace().map(String::from).collect();
    }
    let python = env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL']='3'; import tensorflow as tf; print({expression})"
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| {
            panic!("running {python} to ask tf.sysconfig: {e}; set {var} or PYTHON")
        });
    assert!(
        out.status.success(),
        "{python} could not import tensorflow ({}); set {var} or PYTHON",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    String::from_utf8(out.stdout)
        .expect("flags are UTF-8")
        .split_whitespace()
        .map(String::from)
        .collect()
}
