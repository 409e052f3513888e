"""What the user runs: the command line, the supervisor of Feed and Brain, the embedded venue child, reports."""
