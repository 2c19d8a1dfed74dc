// The `mmsearch` command line: parses arguments, runs one command, and maps every error to
// one sentence on stderr and an exit code (0 ok, 1 runtime failure, 2 bad usage).
#pragma once

namespace mms {

// Runs the program as `mmsearch ARGS...`; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace mms
