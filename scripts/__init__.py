"""Developer scripts: the local runner and its AWS stand-ins."""
