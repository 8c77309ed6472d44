// The programs are the binary target (src/main.rs); this empty library lets
// gateway/build.rs declare the crate as a build-dependency.
#![no_std]
