//! See the module list in `hardening/mod.rs`.
