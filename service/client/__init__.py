"""Client code that talks to a running server over HTTP (no server modules imported)."""
