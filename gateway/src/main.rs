fn main() -> std::process::ExitCode {
    trigate::cli::main()
}
