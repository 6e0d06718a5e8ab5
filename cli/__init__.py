"""The `sttm` command, above every other package: one module per command group (`serve`,
`predict`, `model`, `export`, `bench`), each adding its subcommands to the parser `main`
builds. Commands import what they run lazily, inside the command, so `sttm serve` never pulls
in torch."""
