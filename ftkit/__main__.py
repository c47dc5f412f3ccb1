from ftkit.cli import main

main()
