"""What keeps a run safe while it runs: stop signals, guards, write faults, out of memory, atomic
writes, file checks, and the process settings every command applies first."""
