fn main() -> std::process::ExitCode {
    bnlab::cli::main()
}
