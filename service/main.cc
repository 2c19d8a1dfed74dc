#include "service/cli.h"

int main(int argc, char** argv) { return mms::run_cli(argc, argv); }
