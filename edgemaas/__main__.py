from edgemaas.cli import main

main()
