import CtsyncCLI

CtsyncCommand.main()
