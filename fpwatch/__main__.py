from fpwatch.cli import main

main()
