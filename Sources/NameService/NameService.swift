// The replicated name service (replica server, storage, client) goes here.
