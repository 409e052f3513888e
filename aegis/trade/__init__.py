"""The order side, inside the Brain process: pre-trade risk, the sender thread, the journal, the user data
stream."""
