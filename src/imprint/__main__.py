from imprint.cli import main

main()
