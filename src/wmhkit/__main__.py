from wmhkit.cli import main

raise SystemExit(main())
