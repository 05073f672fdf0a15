from hangjia.cli import main

main()
