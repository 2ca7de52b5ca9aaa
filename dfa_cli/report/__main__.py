from dfa_cli.report.cli import main

main()
