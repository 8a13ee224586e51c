from tsrepo.cli import main

main()
