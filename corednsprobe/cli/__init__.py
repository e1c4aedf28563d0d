"""cli: argument parsing, exit codes and the one-shot commands. No business rules."""
