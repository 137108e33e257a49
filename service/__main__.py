from service.runtime.cli import main

raise SystemExit(main())
