from memfactory_cli.cli import main

main()
