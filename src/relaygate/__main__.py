from relaygate.cli import main

main()
