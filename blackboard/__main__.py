from blackboard.cli import main

main()
